//! A model of FIXAR's accelerator: throughput (IPS) and efficiency (IPS/W) for a
//! workload and a hardware configuration. Pure Rust: never links libtorch.
