//! `fixar info`: versions, devices and CPU features that decide how fast fixar runs here.

use std::path::PathBuf;

/// What `fixar info` prints, one `name: value` line per field.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub fixar_version: String,
    pub tch_version: String,
    pub libtorch_version: String,
    pub libtorch_path: String,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub intra_op_threads: i32,
    pub logical_cpus: usize,
    pub cpu_features: Vec<&'static str>,
}

impl Info {
    pub fn gather() -> Self {
        let (libtorch_version, libtorch_path) = libtorch_version();
        Info {
            fixar_version: env!("CARGO_PKG_VERSION").to_string(),
            tch_version: env!("FIXAR_TCH_VERSION").to_string(),
            libtorch_version,
            libtorch_path,
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            intra_op_threads: tch::get_num_threads(),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_features: cpu_features(),
        }
    }

    pub fn render(&self) -> String {
        let features = if self.cpu_features.is_empty() {
            "none detected".to_string()
        } else {
            self.cpu_features.join(" ")
        };
        format!(
            "fixar: {}\ntch: {}\nlibtorch: {}\nlibtorch_path: {}\ncuda_available: {}\ncuda_devices: {}\ncudnn_available: {}\nlibtorch_intra_op_threads: {}\nlogical_cpus: {}\ncpu_features: {}\n",
            self.fixar_version,
            self.tch_version,
            self.libtorch_version,
            self.libtorch_path,
            self.cuda_available,
            self.cuda_devices,
            self.cudnn_available,
            self.intra_op_threads,
            self.logical_cpus,
            features
        )
    }
}

/// The version of the libtorch actually loaded into this process: finds the mapped
/// `libtorch_cpu.so` in /proc/self/maps and reads the `version.py` of the torch package
/// it belongs to.
fn libtorch_version() -> (String, String) {
    // Make sure libtorch is loaded and initialised before looking.
    let _ = tch::get_num_threads();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("libtorch_cpu.so"))
        .map(PathBuf::from);
    let Some(lib) = lib else {
        return ("unknown (libtorch_cpu.so not mapped)".into(), String::new());
    };
    let torch_dir = lib
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let version = std::fs::read_to_string(torch_dir.join("version.py"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        })
        .or_else(|| std::fs::read_to_string(torch_dir.join("build-version")).ok())
        .unwrap_or_else(|| "unknown".into());
    (version.trim().to_string(), torch_dir.display().to_string())
}

/// SIMD features that decide GEMM speed on x86-64 (what libtorch's kernels dispatch on).
fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    f.push($name);
                }
            )*};
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512dq",
            "avx512vnni",
            "avx512bf16"
        );
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reports_the_loaded_libtorch_as_2_11_0() {
        let info = Info::gather();
        assert!(
            info.libtorch_version.starts_with("2.11.0"),
            "{}",
            info.libtorch_version
        );
        assert!(info.render().contains("libtorch: 2.11.0"));
        assert!(info.intra_op_threads >= 1);
    }
}
