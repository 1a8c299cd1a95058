//! Records the version of tch this binary was built against (read from the workspace's
//! Cargo.lock), so `fixar info` reports it without guessing.
fn tch_version(lock: &str) -> Option<String> {
    let mut in_tch = false;
    for line in lock.lines() {
        if line == "[[package]]" {
            in_tch = false;
        } else if line == "name = \"tch\"" {
            in_tch = true;
        } else if in_tch {
            if let Some(v) = line.strip_prefix("version = \"") {
                return Some(v.trim_end_matches('"').to_string());
            }
        }
    }
    None
}

fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    // Another cargo process may be rewriting the lock file at this moment: retry briefly.
    for _ in 0..50 {
        if let Some(v) = std::fs::read_to_string(&lock)
            .ok()
            .as_deref()
            .and_then(tch_version)
        {
            println!("cargo:rustc-env=FIXAR_TCH_VERSION={v}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no tch package in {}", lock.display());
}
