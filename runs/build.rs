//! Records the version of tch this binary was built against (read from Cargo.lock), so
//! `fixar info` reports it without guessing.
fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut version = String::from("unknown");
    let mut in_tch = false;
    for line in text.lines() {
        if line == "[[package]]" {
            in_tch = false;
        } else if line == "name = \"tch\"" {
            in_tch = true;
        } else if in_tch {
            if let Some(v) = line.strip_prefix("version = \"") {
                version = v.trim_end_matches('"').to_string();
                break;
            }
        }
    }
    println!("cargo:rustc-env=FIXAR_TCH_VERSION={version}");
}
