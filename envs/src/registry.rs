//! Gymnasium ids → environments, with Gymnasium's registered defaults.

use crate::{Env, EnvError, MountainCarContinuous, Pendulum, TimeLimit};

struct NativeSpec {
    id: &'static str,
    make: fn() -> Box<dyn Env>,
}

/// The native ports, each wrapped in the `TimeLimit` Gymnasium registers for it.
const NATIVE: &[NativeSpec] = &[
    NativeSpec {
        id: "Pendulum-v1",
        make: || Box::new(TimeLimit::new(Pendulum::new(), 200)),
    },
    NativeSpec {
        id: "MountainCarContinuous-v0",
        make: || Box::new(TimeLimit::new(MountainCarContinuous::new(), 999)),
    },
    NativeSpec {
        id: crate::interop::CARTPOLE_ID,
        make: || Box::new(crate::interop::discretized_cartpole()),
    },
];

/// The ids [`make`] builds natively (everything else goes to the Python bridge).
pub fn registered_ids() -> Vec<&'static str> {
    NATIVE.iter().map(|s| s.id).collect()
}

fn unknown(id: &str, gymnasium_message: Option<String>) -> EnvError {
    EnvError::UnknownId {
        id: id.to_string(),
        registered: registered_ids().into_iter().map(String::from).collect(),
        gymnasium_message,
    }
}

/// A native env by id, or [`EnvError::UnknownId`] listing the registered ids.
pub fn make_native(id: &str) -> Result<Box<dyn Env>, EnvError> {
    NATIVE
        .iter()
        .find(|s| s.id == id)
        .map(|s| (s.make)())
        .ok_or_else(|| unknown(id, None))
}

/// An env by Gymnasium id with Gymnasium's defaults: a native port when there is one,
/// else a Python Gymnasium worker through the [`crate::bridge`] (which brings
/// Gymnasium's own `TimeLimit`). An id neither knows is [`EnvError::UnknownId`],
/// carrying Gymnasium's message and the native ids.
pub fn make(id: &str) -> Result<Box<dyn Env>, EnvError> {
    if let Ok(env) = make_native(id) {
        return Ok(env);
    }
    match crate::bridge::BridgedEnv::new(id, &crate::bridge::BridgeConfig::default()) {
        Ok(env) => Ok(Box::new(env)),
        Err(EnvError::UnknownId {
            gymnasium_message, ..
        }) => Err(unknown(id, gymnasium_message)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_ids_carry_gymnasium_time_limits() {
        assert_eq!(
            make_native("Pendulum-v1").unwrap().max_episode_steps(),
            Some(200)
        );
        assert_eq!(
            make_native("MountainCarContinuous-v0")
                .unwrap()
                .max_episode_steps(),
            Some(999)
        );
        for id in registered_ids() {
            assert_eq!(make_native(id).unwrap().id(), id);
        }
    }

    #[test]
    fn unknown_native_id_lists_registered_ids() {
        let err = make_native("Pendulum-v9").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("Pendulum-v9"), "{msg}");
        for id in registered_ids() {
            assert!(msg.contains(id), "{msg}");
        }
    }
}
