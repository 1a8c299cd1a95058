"""fixar's Python Gymnasium worker: one environment per process, driven by the Rust
bridge (envs/src/bridge/; the frames: wire.rs) over stdin/stdout.

argv: ENV_ID MAKE_KWARGS_JSON PARENT_PID SPIN_MICROSECONDS

Frames, little-endian. Request: u8 op, u32 payload length, payload. Bit 0x80 of op
asks the worker to spin after answering: poll stdin without sleeping for up to
SPIN_MICROSECONDS before blocking on it (the Rust side spins for the answer meanwhile,
so neither process has to be woken up).
  b"R" reset:           u8 has_seed, u64 seed
  b"S" step:            float32 action elements
  b"T" reset to state:  float64 state elements
  b"G" get state:       (empty)
Response: u32 body length, body = u8 status, then
  status 0 after R/T:   u32 n, n float32 observation elements
  status 0 after S:     f64 reward, u8 terminated, u8 truncated, u32 n, n float32 obs
  status 0 after G:     u32 n, n float64 state elements
  status 1 (exception): UTF-8 message
The first response is the handshake: a JSON object (spaces, time limit, or error).
The worker exits when stdin closes or its parent process goes away.
"""

import json
import os
import select
import struct
import sys
import threading
import time
import traceback

HEADER = struct.Struct("<BI")
LEN = struct.Struct("<I")
OBS_HEAD = struct.Struct("<IBI")
STEP_HEAD = struct.Struct("<IBdBBI")


def watch_parent(parent_pid):
    # Leave when the Rust process is gone, even if busy and stdin is not being read.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def bound_list(values):
    # JSON has no infinities: send them as strings.
    out = []
    for v in values.reshape(-1).tolist():
        if v == float("inf"):
            out.append("inf")
        elif v == float("-inf"):
            out.append("-inf")
        else:
            out.append(v)
    return out


def main():
    env_id, kwargs_json, parent_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spin_s = int(sys.argv[4]) * 1e-6 if len(sys.argv) > 4 else 0.0
    # Frames go out on a private copy of fd 1; fd 1 itself now points at stderr, so a
    # stray print() in a library cannot corrupt the protocol.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    threading.Thread(target=watch_parent, args=(parent_pid,), daemon=True).start()

    def put(frame):
        written = os.write(out_fd, frame)
        if written != len(frame):
            view = memoryview(frame)[written:]
            while view:
                view = view[os.write(out_fd, view):]

    def send(body):
        put(LEN.pack(len(body)) + body)

    try:
        import numpy as np
        import gymnasium as gym

        env = gym.make(env_id, **json.loads(kwargs_json))
    except Exception as exc:  # report Gymnasium's own message to Rust
        unknown = False
        try:
            unknown = isinstance(exc, gym.error.UnregisteredEnv)
        except NameError:
            pass
        send(json.dumps({"ok": False, "unknown_id": unknown,
                         "error": "".join(traceback.format_exception_only(exc)).strip()}).encode())
        return

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box):
        send(json.dumps({"ok": False, "unknown_id": False,
                         "error": f"{env_id} has observation space {obs_space} and action space "
                                  f"{act_space}; the bridge needs Box spaces"}).encode())
        return
    spec = env.spec
    send(json.dumps({
        "ok": True,
        "obs_low": bound_list(obs_space.low), "obs_high": bound_list(obs_space.high),
        "act_low": bound_list(act_space.low), "act_high": bound_list(act_space.high),
        "max_episode_steps": spec.max_episode_steps if spec is not None else None,
        "gymnasium": gym.__version__,
    }).encode())

    act_dtype = act_space.dtype
    act_shape = act_space.shape
    f32 = np.float32
    step = env.step
    obs_size = int(np.prod(obs_space.shape))
    step_len = 15 + 4 * obs_size
    step_out = bytearray(STEP_HEAD.size + 4 * obs_size)
    obs_out = np.frombuffer(step_out, dtype="<f4", offset=STEP_HEAD.size)
    pack_step = STEP_HEAD.pack_into

    def obs_frame(obs):
        ob = np.asarray(obs, dtype=f32)
        return OBS_HEAD.pack(5 + 4 * ob.size, 0, ob.size) + ob.tobytes()

    def fail(exc):
        msg = "".join(traceback.format_exception_only(exc)).strip().encode()
        send(b"\x01" + msg)

    poller = select.poll()
    poller.register(inp.fileno(), select.POLLIN)
    ready = poller.poll
    clock = time.perf_counter
    spin = False

    while True:
        if spin:
            until = clock() + spin_s
            while not ready(0) and clock() < until:
                pass
        head = inp.read(5)
        if len(head) < 5:
            return
        op, n = HEADER.unpack(head)
        spin = op & 0x80 and spin_s > 0
        op &= 0x7F
        payload = inp.read(n) if n else b""
        if len(payload) < n:
            return
        if op == 83:  # S
            try:
                action = np.frombuffer(payload, dtype=f32)
                if action.dtype != act_dtype:
                    action = action.astype(act_dtype)
                obs, reward, terminated, truncated, _ = step(action.reshape(act_shape))
                if np.size(obs) == obs_size:
                    # Fill the reused answer in place (no per-step allocations).
                    obs_out[:] = np.ravel(obs)
                    pack_step(step_out, 0, step_len, 0, float(reward), bool(terminated),
                              bool(truncated), obs_size)
                    put(step_out)
                else:
                    ob = np.asarray(obs, dtype=f32).reshape(-1)
                    put(STEP_HEAD.pack(15 + 4 * ob.size, 0, float(reward), bool(terminated),
                                       bool(truncated), ob.size) + ob.tobytes())
            except Exception as exc:
                fail(exc)
        elif op == 82:  # R
            try:
                has_seed, seed = struct.unpack("<BQ", payload)
                obs, _ = env.reset(seed=seed if has_seed else None)
                put(obs_frame(obs))
            except Exception as exc:
                fail(exc)
        elif op == 84:  # T
            try:
                state = np.frombuffer(payload, dtype="<f8").copy()
                env.reset()
                u = env.unwrapped
                if hasattr(u, "set_state") and hasattr(u, "model"):  # MuJoCo: qpos ++ qvel
                    import mujoco

                    # As MujocoEnv.reset does: clear mjData (solver warm-start included)
                    # before setting the state, so the physics continues bit for bit.
                    mujoco.mj_resetData(u.model, u.data)
                    nq = u.model.nq
                    u.set_state(state[:nq], state[nq:])
                else:  # classic control keeps its state in `state`
                    u.state = state
                obs = u._get_obs() if hasattr(u, "_get_obs") else np.array(u.state, dtype=f32)
                put(obs_frame(obs))
            except Exception as exc:
                fail(exc)
        elif op == 71:  # G
            try:
                u = env.unwrapped
                if hasattr(u, "data") and hasattr(u, "model"):  # MuJoCo: qpos ++ qvel
                    state = np.concatenate([u.data.qpos, u.data.qvel])
                else:
                    state = np.asarray(u.state)
                state = np.ascontiguousarray(state, dtype="<f8").reshape(-1)
                send(b"\x00" + LEN.pack(state.size) + state.tobytes())
            except Exception as exc:
                fail(exc)
        else:
            fail(ValueError(f"unknown request {op}"))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
