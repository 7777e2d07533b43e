use super::*;
use candle_core::{Device, Var};

/// Deterministic values of spread about 1 (a sine of the index; `salt` tells arrays apart).
fn values_of(shape: (usize, usize, usize), salt: f32) -> Tensor {
    let n = shape.0 * shape.1 * shape.2;
    let v: Vec<f32> = (0..n).map(|i| 1.7 * (i as f32 * 0.618 + salt).sin()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `(q, k, v)` `[b, t, d]` as variables.
fn inputs(b: usize, t: usize, d: usize) -> (Var, Var, Var) {
    let var = |salt| Var::from_tensor(&values_of((b, t, d), salt)).unwrap();
    (var(0.0), var(1.0), var(2.0))
}

/// [`attention`] or [`attention_composite`].
type AttentionFn = fn(Tensor, Tensor, Tensor, usize, Option<&Tensor>, Numerics) -> Result<Tensor>;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// The key-padding bias `[b, 1, 1, t]`: the last `masked` keys of every other sequence get the
/// large negative score BERT uses.
fn key_mask(b: usize, t: usize, masked: usize) -> Tensor {
    let values: Vec<f32> =
        (0..b * t).map(|i| if (i / t) % 2 == 1 && i % t >= t - masked { -10_000.0 } else { 0.0 }).collect();
    Tensor::from_vec(values, (b, 1, 1, t), &Device::Cpu).unwrap()
}

/// The causal bias `[1, 1, t, t]` (CLIP's text tower).
fn causal(t: usize) -> Tensor {
    let values: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::MIN / 2.0 } else { 0.0 }).collect();
    Tensor::from_vec(values, (1, 1, t, t), &Device::Cpu).unwrap()
}

/// Fused and composite attention agree bit for bit in value and in the gradients of `q`,
/// `k`, `v` (training numerics), and in value under evaluation numerics.
fn assert_bit_identical(b: usize, t: usize, d: usize, heads: usize, bias: Option<&Tensor>) {
    let (q, k, v) = inputs(b, t, d);
    let weights = values_of((b, t, d), 3.0);
    let run = |fused: bool| {
        let f = if fused { attention } else { attention_composite };
        let out = f(
            q.as_tensor().clone(),
            k.as_tensor().clone(),
            v.as_tensor().clone(),
            heads,
            bias,
            Numerics::Differentiable,
        )
        .unwrap();
        let grads = (&out * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g = |x: &Var| bits(grads.get(x.as_tensor()).unwrap());
        (bits(&out), g(&q), g(&k), g(&v))
    };
    let (ours, theirs) = (run(true), run(false));
    assert_eq!(ours.0, theirs.0, "values ({b}, {t}, {d}, {heads})");
    assert_eq!(ours.1, theirs.1, "∂q");
    assert_eq!(ours.2, theirs.2, "∂k");
    assert_eq!(ours.3, theirs.3, "∂v");
    let eval = |f: AttentionFn| {
        bits(
            &f(q.as_tensor().detach(), k.as_tensor().detach(), v.as_tensor().detach(), heads, bias, Numerics::Fused)
                .unwrap(),
        )
    };
    assert_eq!(eval(attention), eval(attention_composite), "evaluation values");
}

#[test]
fn equals_the_composite_bit_for_bit_without_a_bias() {
    // The built-in ViT's shape (17 tokens, 4 heads), the narrowest fused heads (2 wide), and
    // heads 1 wide (which take the composite path).
    assert_bit_identical(3, 17, 32, 4, None);
    assert_bit_identical(2, 5, 6, 3, None);
    assert_bit_identical(2, 5, 3, 3, None);
}

#[test]
fn equals_the_composite_bit_for_bit_with_padding_and_causal_masks() {
    assert_bit_identical(4, 9, 12, 2, Some(&key_mask(4, 9, 3)));
    assert_bit_identical(2, 7, 8, 2, Some(&causal(7)));
    // A bias shared by all sequences but not by rows, and one given as [b, t] (rank 2).
    assert_bit_identical(3, 6, 8, 4, Some(&causal(6).squeeze(0).unwrap().squeeze(0).unwrap()));
}

#[test]
fn equals_the_composite_bit_for_bit_above_the_threading_threshold() {
    // MiniLM's shape at 128 tokens: 12 heads of 32; b·H·T²·hd = 4·12·128²·32 ≥ 2^24, so the
    // (sequence, head) pairs run over threads.
    let dims = Dims { b: 4, t: 128, d: 384, heads: 12, hd: 32 };
    assert!(dims.parallel());
    assert_bit_identical(4, 128, 384, 12, Some(&key_mask(4, 128, 40)));
}

#[test]
fn a_per_head_bias_takes_the_composite_path_and_agrees() {
    let (b, t, heads) = (2, 5, 2);
    let bias = values_of((heads, t, t), 4.0).unsqueeze(0).unwrap();
    assert!(ScoreBias::from_tensor(&bias, Dims { b, t, d: 8, heads, hd: 4 }).unwrap().is_none());
    assert_bit_identical(b, t, 8, heads, Some(&bias));
}

#[test]
fn one_head_by_hand() {
    // One sequence of two tokens, head width 1 (scale 1): q = [1, 0], k = [1, 2], v = [1, 3].
    // Row 0 scores [1, 2] → p = [1, e]/(1 + e); row 1 scores [0, 0] → p = [½, ½].
    let dev = Device::Cpu;
    let col = |x: [f32; 2]| Tensor::from_vec(x.to_vec(), (1, 2, 1), &dev).unwrap();
    let v = Var::from_tensor(&col([1.0, 3.0])).unwrap();
    let out =
        attention(col([1.0, 0.0]), col([1.0, 2.0]), v.as_tensor().clone(), 1, None, Numerics::Differentiable).unwrap();
    let e = std::f64::consts::E;
    let p0 = [1.0 / (1.0 + e), e / (1.0 + e)];
    let expected = [p0[0] + 3.0 * p0[1], 2.0];
    let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (g, x) in got.iter().zip(expected) {
        assert!((*g as f64 - x).abs() < 1e-6, "{got:?} vs {expected:?}");
    }
    // The loss out[0] has ∂v_j = p_0j; out[0] + out[1] has ∂v_j = p_0j + ½.
    let grads = out.flatten_all().unwrap().get(0).unwrap().backward().unwrap();
    let dv = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((dv[0] as f64 - p0[0]).abs() < 1e-6 && (dv[1] as f64 - p0[1]).abs() < 1e-6, "{dv:?}");
}
