//! Token embedding lookup and its scatter-add gradient.

use rayon::prelude::*;

/// out (N, H) = wte[ids[n]] for ids (N) into wte (V, H). Ids are checked by the caller.
pub fn embedding_forward(out: &mut [f32], ids: &[u32], wte: &[f32], h: usize) {
    out.par_chunks_mut(h)
        .zip(ids.par_iter())
        .for_each(|(o, &id)| {
            let id = id as usize;
            o.copy_from_slice(&wte[id * h..(id + 1) * h]);
        });
}

/// dwte (V, H) += scatter of dout (N, H) by ids (N); ids ≥ V (tokens another
/// vocabulary-parallel rank owns) are skipped. Parallel over column blocks of H, each walking
/// the tokens in order, so the sums are deterministic.
pub fn embedding_backward(dwte: &mut [f32], dout: &[f32], ids: &[u32], h: usize) {
    const BLOCK: usize = 64;
    let n_blocks = h.div_ceil(BLOCK);
    let v = dwte.len() / h.max(1);
    // Each task owns columns [b*BLOCK, (b+1)*BLOCK) of every row; collect per-block updates to
    // keep the borrow checker happy without unsafe.
    let updates: Vec<Vec<(usize, Vec<f32>)>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(h));
            let mut rows: std::collections::BTreeMap<usize, Vec<f32>> = Default::default();
            for (t, &id) in ids.iter().enumerate() {
                if id as usize >= v {
                    continue;
                }
                let acc = rows
                    .entry(id as usize)
                    .or_insert_with(|| vec![0.0; hi - lo]);
                for (a, &g) in acc.iter_mut().zip(&dout[t * h + lo..t * h + hi]) {
                    *a += g;
                }
            }
            rows.into_iter().map(|(id, v)| (id * h + lo, v)).collect()
        })
        .collect();
    for block in updates {
        for (start, v) in block {
            for (d, g) in dwte[start..start + v.len()].iter_mut().zip(v) {
                *d += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_scatter_add() {
        let (v, h) = (5, 130);
        let wte: Vec<f32> = (0..v * h).map(|i| i as f32).collect();
        let ids = [3u32, 1, 3];
        let mut out = vec![0.0; 3 * h];
        embedding_forward(&mut out, &ids, &wte, h);
        assert_eq!(&out[..h], &wte[3 * h..4 * h]);
        assert_eq!(&out[h..2 * h], &wte[h..2 * h]);
        let dout: Vec<f32> = (0..3 * h).map(|i| (i % 7) as f32).collect();
        let mut dwte = vec![1.0; v * h];
        embedding_backward(&mut dwte, &dout, &ids, h);
        for k in 0..h {
            assert_eq!(dwte[3 * h + k], 1.0 + dout[k] + dout[2 * h + k]);
            assert_eq!(dwte[h + k], 1.0 + dout[h + k]);
            assert_eq!(dwte[k], 1.0);
        }
    }
}
