//! DDPG and TD3 whose networks train in fixed point, following the accelerator's
//! datapath (see `../shared/design/numerics.md`).
