//! The replay buffer: a ring of transitions in contiguous float32 arrays (one per
//! field), sampled uniformly with replacement from a seeded RNG.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// A minibatch as tensors (f32): obs and next_obs (B x obs_dim), actions (B x act_dim),
/// rewards and terminated flags (B x 1).
pub struct Batch {
    pub obs: Tensor,
    pub actions: Tensor,
    pub rewards: Tensor,
    pub next_obs: Tensor,
    pub terminated: Tensor,
}

/// Transitions in field-major contiguous storage; grows to `capacity`, then overwrites
/// the oldest.
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    act_dim: usize,
    pos: usize,
    len: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<f32>,
    // Gather buffers reused by `sample`.
    scratch: [Vec<f32>; 5],
    indices: Vec<usize>,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize) -> Self {
        assert!(capacity > 0, "replay capacity must be positive");
        ReplayBuffer {
            capacity,
            obs_dim,
            act_dim,
            pos: 0,
            len: 0,
            obs: Vec::new(),
            next_obs: Vec::new(),
            actions: Vec::new(),
            rewards: Vec::new(),
            terminated: Vec::new(),
            scratch: Default::default(),
            indices: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores one transition (`terminated`: the MDP ended, do not bootstrap; a time-limit
    /// truncation is not termination).
    pub fn push(
        &mut self,
        obs: &[f32],
        action: &[f32],
        reward: f32,
        next_obs: &[f32],
        terminated: bool,
    ) {
        assert_eq!(obs.len(), self.obs_dim);
        assert_eq!(next_obs.len(), self.obs_dim);
        assert_eq!(action.len(), self.act_dim);
        let t = if terminated { 1.0 } else { 0.0 };
        if self.len < self.capacity {
            self.obs.extend_from_slice(obs);
            self.next_obs.extend_from_slice(next_obs);
            self.actions.extend_from_slice(action);
            self.rewards.push(reward);
            self.terminated.push(t);
            self.len += 1;
        } else {
            let (o, a) = (self.pos * self.obs_dim, self.pos * self.act_dim);
            self.obs[o..o + self.obs_dim].copy_from_slice(obs);
            self.next_obs[o..o + self.obs_dim].copy_from_slice(next_obs);
            self.actions[a..a + self.act_dim].copy_from_slice(action);
            self.rewards[self.pos] = reward;
            self.terminated[self.pos] = t;
        }
        self.pos = (self.pos + 1) % self.capacity;
    }

    /// `batch` transitions drawn uniformly with replacement.
    pub fn sample(&mut self, batch: usize, rng: &mut ChaCha8Rng) -> Batch {
        assert!(self.len > 0, "sampling an empty replay buffer");
        let (od, ad) = (self.obs_dim, self.act_dim);
        // The indices first (the same draws in the same order), then one gather per
        // field: the loads of a field are independent, so their cache misses overlap.
        let idx = &mut self.indices;
        idx.clear();
        idx.extend((0..batch).map(|_| rng.gen_range(0..self.len)));
        let [so, sa, sr, sn, st] = &mut self.scratch;
        for (dst, src, d) in [
            (&mut *so, &self.obs, od),
            (&mut *sn, &self.next_obs, od),
            (&mut *sa, &self.actions, ad),
            (&mut *sr, &self.rewards, 1),
            (&mut *st, &self.terminated, 1),
        ] {
            dst.clear();
            for &i in idx.iter() {
                dst.extend_from_slice(&src[i * d..(i + 1) * d]);
            }
        }
        let b = batch as i64;
        Batch {
            obs: Tensor::from_slice(so).view([b, od as i64]),
            actions: Tensor::from_slice(sa).view([b, ad as i64]),
            rewards: Tensor::from_slice(sr).view([b, 1]),
            next_obs: Tensor::from_slice(sn).view([b, od as i64]),
            terminated: Tensor::from_slice(st).view([b, 1]),
        }
    }

    /// (pos, len) and the filled part of each field, for checkpoints.
    pub fn state(&self) -> (usize, usize, [&[f32]; 5]) {
        (
            self.pos,
            self.len,
            [
                &self.obs,
                &self.actions,
                &self.rewards,
                &self.next_obs,
                &self.terminated,
            ],
        )
    }

    /// Sets the capacity before a [`ReplayBuffer::restore`] (the checkpoint's, which
    /// may differ from what the config sizes now).
    pub fn set_capacity(&mut self, capacity: usize) {
        assert!(capacity > 0, "replay capacity must be positive");
        self.capacity = capacity;
    }

    /// Gives a buffer that has never overwritten a transition (`len` pushes in all)
    /// another capacity, at least its length: it then holds and samples exactly what a
    /// buffer made with that capacity would after the same pushes (sampling reads only
    /// `len`; the next push appends at `len`). `None`, and no change, when the buffer
    /// has overwritten (`pushes != len`) or `capacity < len`.
    pub fn recapacity(&mut self, capacity: usize, pushes: u64) -> Option<()> {
        if pushes != self.len as u64 || capacity < self.len.max(1) {
            return None;
        }
        self.capacity = capacity;
        self.pos = self.len % capacity;
        Some(())
    }

    /// Restores what `state` returned.
    pub fn restore(
        &mut self,
        pos: usize,
        len: usize,
        fields: [Vec<f32>; 5],
    ) -> Result<(), crate::checkpoint::CheckpointError> {
        let [obs, actions, rewards, next_obs, terminated] = fields;
        let ok = len <= self.capacity
            && pos < self.capacity
            && obs.len() == len * self.obs_dim
            && next_obs.len() == len * self.obs_dim
            && actions.len() == len * self.act_dim
            && rewards.len() == len
            && terminated.len() == len;
        if !ok {
            return Err(crate::checkpoint::CheckpointError::Mismatch(format!(
                "replay buffer state does not fit (len {len}, capacity {}, obs dim {}, action dim {})",
                self.capacity, self.obs_dim, self.act_dim
            )));
        }
        self.pos = pos;
        self.len = len;
        self.obs = obs;
        self.actions = actions;
        self.rewards = rewards;
        self.next_obs = next_obs;
        self.terminated = terminated;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_recapacitied_buffer_equals_one_made_with_that_capacity() {
        let push = |rb: &mut ReplayBuffer, i: usize| {
            let f = i as f32;
            rb.push(&[f, f], &[f], f, &[f + 1.0, f + 1.0], false);
        };
        for (small, pushed, big) in [(4, 4, 9), (4, 3, 9), (9, 4, 4), (9, 4, 6)] {
            let (mut a, mut b) = (ReplayBuffer::new(small, 2, 1), ReplayBuffer::new(big, 2, 1));
            for i in 0..pushed {
                push(&mut a, i);
                push(&mut b, i);
            }
            a.recapacity(big, pushed as u64).expect("never overwritten");
            for i in pushed..12 {
                push(&mut a, i);
                push(&mut b, i);
            }
            assert_eq!(a.state().0, b.state().0, "{small}->{big}: pos");
            assert_eq!(a.state().1, b.state().1, "{small}->{big}: len");
            assert_eq!(a.state().2, b.state().2, "{small}->{big}: fields");
            let (mut ra, mut rb) = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(1));
            let (sa, sb) = (a.sample(16, &mut ra), b.sample(16, &mut rb));
            assert!(sa.obs.equal(&sb.obs) && sa.rewards.equal(&sb.rewards));
        }
        // Overwritten, or smaller than what it holds: refused, unchanged.
        let mut rb = ReplayBuffer::new(3, 2, 1);
        (0..5).for_each(|i| push(&mut rb, i));
        assert!(rb.recapacity(8, 5).is_none());
        let mut rb = ReplayBuffer::new(8, 2, 1);
        (0..5).for_each(|i| push(&mut rb, i));
        assert!(rb.recapacity(4, 5).is_none());
        assert_eq!((rb.capacity(), rb.state().0), (8, 5));
    }

    #[test]
    fn ring_overwrites_oldest_and_samples_only_stored_transitions() {
        let mut rb = ReplayBuffer::new(3, 2, 1);
        for i in 0..5 {
            let f = i as f32;
            rb.push(&[f, f], &[f], f, &[f + 1.0, f + 1.0], i == 4);
        }
        assert_eq!(rb.len(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let b = rb.sample(64, &mut rng);
        let r: Vec<f32> = Vec::try_from(b.rewards.view([-1])).unwrap();
        assert!(r.iter().all(|&x| (2.0..=4.0).contains(&x)), "{r:?}");
        let o: Vec<f32> = Vec::try_from(b.obs.view([-1])).unwrap();
        let t: Vec<f32> = Vec::try_from(b.terminated.view([-1])).unwrap();
        for (k, &x) in r.iter().enumerate() {
            assert_eq!(o[2 * k], x);
            assert_eq!(t[k], if x == 4.0 { 1.0 } else { 0.0 });
        }
    }
}
