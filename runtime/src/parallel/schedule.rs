//! The pipeline schedule: 1F1B (one forward, one backward) as in Megatron-LM's
//! `forward_backward_pipelining_without_interleaving`, as a list of operations per stage.
//!
//! Stage `s` of `p` runs `min(p − s − 1, m)` warm-up forwards, then alternates one forward and
//! one backward, then drains the remaining backwards, so at most `p − s` micro-batches are in
//! flight (their activations live in arena `mb % (p − s)`). Sends that cross a receive in the
//! other direction are fused (`SendForwardRecvBackward`, `SendBackwardRecvForward`) and run
//! both directions at once, so neighbouring stages never wait on each other's full sockets.
//! With one stage the schedule is simply forward, backward per micro-batch.

/// One operation of a stage, on micro-batch indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Receive the input activations of a micro-batch from the previous stage.
    RecvForward(usize),
    /// Run the forward of a micro-batch.
    Forward(usize),
    /// Send a micro-batch's output activations to the next stage.
    SendForward(usize),
    /// Send `send`'s output forward while receiving `recv`'s output gradient from the next stage.
    SendForwardRecvBackward {
        /// Micro-batch whose output is sent.
        send: usize,
        /// Micro-batch whose gradient is received.
        recv: usize,
    },
    /// Receive the gradient of a micro-batch's output from the next stage.
    RecvBackward(usize),
    /// Run the backward of a micro-batch.
    Backward(usize),
    /// Send the gradient of a micro-batch's input to the previous stage.
    SendBackward(usize),
    /// Send `send`'s input gradient back while receiving `recv`'s input from the previous stage.
    SendBackwardRecvForward {
        /// Micro-batch whose gradient is sent.
        send: usize,
        /// Micro-batch whose input is received.
        recv: usize,
    },
}

/// Activation arenas stage `stage` of `stages` needs for `m` micro-batches.
pub fn arenas(stage: usize, stages: usize, m: usize) -> usize {
    (stages - stage).min(m).max(1)
}

/// The 1F1B operations of stage `stage` of `stages` over `m` micro-batches.
pub fn one_f_one_b(stage: usize, stages: usize, m: usize) -> Vec<Op> {
    let (first, last) = (stage == 0, stage + 1 == stages);
    let warmup = (stages - stage - 1).min(m);
    let steady = m - warmup;
    let mut ops = Vec::new();
    for i in 0..warmup {
        if !first {
            ops.push(Op::RecvForward(i));
        }
        ops.push(Op::Forward(i));
        if !last {
            ops.push(Op::SendForward(i));
        }
    }
    if steady > 0 && !first {
        ops.push(Op::RecvForward(warmup));
    }
    for i in 0..steady {
        let (f, b) = (warmup + i, i);
        ops.push(Op::Forward(f));
        if !last {
            ops.push(Op::SendForwardRecvBackward { send: f, recv: b });
        }
        ops.push(Op::Backward(b));
        if !first {
            if i + 1 == steady {
                ops.push(Op::SendBackward(b));
            } else {
                ops.push(Op::SendBackwardRecvForward {
                    send: b,
                    recv: f + 1,
                });
            }
        }
    }
    for b in steady..m {
        if !last {
            ops.push(Op::RecvBackward(b));
        }
        ops.push(Op::Backward(b));
        if !first {
            ops.push(Op::SendBackward(b));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Runs every stage's ops with unbounded channels between neighbours (sends never block,
    /// receives wait) and checks: no deadlock, every message received is the one expected,
    /// every micro-batch goes forward then backward once per stage, and in-flight
    /// micro-batches never share an arena.
    fn simulate(stages: usize, m: usize) {
        let ops: Vec<Vec<Op>> = (0..stages).map(|s| one_f_one_b(s, stages, m)).collect();
        let mut pc = vec![0usize; stages];
        // fwd[s]: activations s -> s+1; bwd[s]: gradients s+1 -> s.
        let mut fwd: Vec<VecDeque<usize>> = vec![VecDeque::new(); stages];
        let mut bwd: Vec<VecDeque<usize>> = vec![VecDeque::new(); stages];
        let mut in_flight: Vec<Vec<usize>> = vec![Vec::new(); stages];
        let mut done = vec![(0usize, 0usize); stages];
        // Whether the send half of stage s's current fused op has been delivered.
        let mut sent = vec![false; stages];
        loop {
            let mut progressed = false;
            for s in 0..stages {
                while pc[s] < ops[s].len() {
                    let recv_ok = |q: &VecDeque<usize>, mb: usize| q.front() == Some(&mb);
                    let op = ops[s][pc[s]];
                    let ready = match op {
                        Op::RecvForward(mb) => recv_ok(&fwd[s - 1], mb),
                        Op::RecvBackward(mb) => recv_ok(&bwd[s], mb),
                        Op::SendForwardRecvBackward { recv, .. } => {
                            // The send half is delivered even if the receive waits.
                            recv_ok(&bwd[s], recv)
                        }
                        Op::SendBackwardRecvForward { recv, .. } => recv_ok(&fwd[s - 1], recv),
                        _ => true,
                    };
                    if !ready {
                        // Deliver the send half of a fused op before blocking on its receive.
                        match op {
                            Op::SendForwardRecvBackward { send, .. } if !sent[s] => {
                                fwd[s].push_back(send);
                                sent[s] = true;
                                progressed = true;
                            }
                            Op::SendBackwardRecvForward { send, .. } if !sent[s] => {
                                bwd[s - 1].push_back(send);
                                sent[s] = true;
                                progressed = true;
                            }
                            _ => {}
                        }
                        break;
                    }
                    match op {
                        Op::RecvForward(_) => {
                            fwd[s - 1].pop_front();
                        }
                        Op::RecvBackward(_) => {
                            bwd[s].pop_front();
                        }
                        Op::Forward(mb) => {
                            let n = arenas(s, stages, m);
                            assert!(in_flight[s].iter().all(|&o| o % n != mb % n), "arena clash");
                            in_flight[s].push(mb);
                            assert_eq!(done[s].0, mb);
                            done[s].0 += 1;
                        }
                        Op::Backward(mb) => {
                            assert_eq!(in_flight[s].first(), Some(&mb));
                            in_flight[s].remove(0);
                            assert_eq!(done[s].1, mb);
                            done[s].1 += 1;
                        }
                        Op::SendForward(mb) => fwd[s].push_back(mb),
                        Op::SendBackward(mb) => bwd[s - 1].push_back(mb),
                        Op::SendForwardRecvBackward { send, .. } => {
                            if !sent[s] {
                                fwd[s].push_back(send);
                            }
                            bwd[s].pop_front();
                        }
                        Op::SendBackwardRecvForward { send, .. } => {
                            if !sent[s] {
                                bwd[s - 1].push_back(send);
                            }
                            fwd[s - 1].pop_front();
                        }
                    }
                    sent[s] = false;
                    pc[s] += 1;
                    progressed = true;
                }
            }
            if pc.iter().zip(&ops).all(|(p, o)| *p == o.len()) {
                break;
            }
            assert!(progressed, "deadlock: stages {stages} m {m} at {pc:?}");
        }
        assert!(done.iter().all(|&d| d == (m, m)));
        assert!(fwd.iter().chain(&bwd).all(|q| q.is_empty()));
    }

    #[test]
    fn one_f_one_b_completes_without_deadlock() {
        for stages in 1..=4 {
            for m in stages..=9 {
                simulate(stages, m);
            }
        }
    }

    #[test]
    fn two_stages_four_micro_batches() {
        use Op::*;
        assert_eq!(
            one_f_one_b(0, 2, 4),
            vec![
                Forward(0),
                SendForward(0),
                Forward(1),
                SendForwardRecvBackward { send: 1, recv: 0 },
                Backward(0),
                Forward(2),
                SendForwardRecvBackward { send: 2, recv: 1 },
                Backward(1),
                Forward(3),
                SendForwardRecvBackward { send: 3, recv: 2 },
                Backward(2),
                RecvBackward(3),
                Backward(3),
            ]
        );
    }
}
