//! TEMPORARY probe (to be removed).
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, Device, Module, Tensor};
use mycel_models::sampling::SplitMix64;

fn rnd(rng: &mut SplitMix64, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = (rng.next_f64() * 2.0 - 1.0) as f32 * scale;
            if i % 97 == 0 { x * 50.0 } else { x }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn cmp(name: &str, batch: &Tensor, rows: &[Tensor]) {
    let b = batch.reshape((rows.len(), ())).unwrap();
    let mut worst = 0f32;
    let mut nbad = 0;
    for (i, r) in rows.iter().enumerate() {
        let x = b
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if d > 0.0 {
            nbad += 1;
        }
        worst = worst.max(d);
    }
    println!(
        "{name}: rows differing {nbad}/{} worst {worst:e}",
        rows.len()
    );
}

#[test]
#[ignore]
fn probe() {
    let mut rng = SplitMix64::new(1);
    let m = 55;
    for (dt, k, n) in [
        (GgmlDType::Q4_1, 576, 1536),
        (GgmlDType::Q8_0, 576, 960),
        (GgmlDType::Q8_0, 1536, 576),
        (GgmlDType::Q4_1, 1536, 576),
        (GgmlDType::Q8_0, 576, 49152),
    ] {
        let w =
            QMatMul::from_qtensor(QTensor::quantize(&rnd(&mut rng, &[n, k], 0.05), dt).unwrap())
                .unwrap();
        let x = rnd(&mut rng, &[1, m, k], 1.0);
        let yb = w.forward(&x).unwrap();
        let rows: Vec<Tensor> = (0..m)
            .map(|i| w.forward(&x.narrow(1, i, 1).unwrap()).unwrap())
            .collect();
        cmp(&format!("qmatmul {dt:?} k{k} n{n}"), &yb, &rows);
    }
    let x = rnd(&mut rng, &[1, m, 576], 1.0);
    let g = rnd(&mut rng, &[576], 1.0);
    let yb = candle_nn::ops::rms_norm(&x, &g, 1e-5).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| candle_nn::ops::rms_norm(&x.narrow(1, i, 1).unwrap(), &g, 1e-5).unwrap())
        .collect();
    cmp("rms_norm", &yb, &rows);
    let yb = candle_nn::ops::silu(&x).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| candle_nn::ops::silu(&x.narrow(1, i, 1).unwrap()).unwrap())
        .collect();
    cmp("silu", &yb, &rows);
    let yb = (&x * &x).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| {
            let r = x.narrow(1, i, 1).unwrap();
            (&r * &r).unwrap()
        })
        .collect();
    cmp("mul", &yb, &rows);
    // softmax rows: batch row i has 55 entries with -inf after i; single has i+1 entries.
    let s = rnd(&mut rng, &[m, m], 3.0);
    let mask: Vec<f32> = (0..m)
        .flat_map(|i| (0..m).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (m, m), &Device::Cpu).unwrap();
    let sb = candle_nn::ops::softmax_last_dim(&(&s + &mask).unwrap()).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| {
            candle_nn::ops::softmax_last_dim(
                &s.get(i)
                    .unwrap()
                    .narrow(0, 0, i + 1)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap()
            .pad_with_zeros(D::Minus1, 0, m - i - 1)
            .unwrap()
        })
        .collect();
    cmp("softmax", &sb, &rows);
    // attention matmuls: (rows, kv) x (kv, 64)
    let v = rnd(&mut rng, &[m, 64], 1.0);
    let ab = sb.matmul(&v).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| {
            rows[i]
                .narrow(1, 0, i + 1)
                .unwrap()
                .matmul(&v.narrow(0, 0, i + 1).unwrap())
                .unwrap()
        })
        .collect();
    cmp("att@v", &ab, &rows);
    let q = rnd(&mut rng, &[m, 64], 1.0);
    let qk = q.matmul(&v.t().unwrap()).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| {
            q.narrow(0, i, 1)
                .unwrap()
                .matmul(&v.narrow(0, 0, i + 1).unwrap().t().unwrap())
                .unwrap()
                .pad_with_zeros(D::Minus1, 0, m - i - 1)
                .unwrap()
        })
        .collect();
    let qk_masked = (qk.broadcast_mul(
        &mask
            .ge(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap(),
    ))
    .unwrap();
    cmp("q@k^T", &qk_masked, &rows);
}
