//! What `train --plot` draws per fake-quant site: the values a site sees and how many of
//! them fall outside the clip points of its stored range, counted exactly.

mod common;

use qir::Tensor;
use runtime::data::{Feed, shuffled};
use runtime::sites::site_values;

#[test]
fn site_values_count_the_values_outside_each_channels_clip_points() {
    let g = common::local_model("digits_mlp_qat.qir");
    let mut store = qir_interp::init_store(&g, 3).unwrap();
    // the input's stored range [0, 0.5] (affine u8: clip points 0 and 0.5); channel 0 of
    // fc1.w narrowed to [-0.01, 0.01] (symmetric: +-0.01), the others their own extremes
    store.insert("x.min", Tensor::scalar_f32(0.0));
    store.insert("x.max", Tensor::scalar_f32(0.5));
    let w = store.get("fc1.w").unwrap().as_f32().unwrap().to_vec();
    let (mut mins, mut maxs) = (Vec::new(), Vec::new());
    for c in 0..32 {
        let row = &w[c * 64..(c + 1) * 64];
        mins.push(row.iter().copied().fold(f32::INFINITY, f32::min));
        maxs.push(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    }
    mins[0] = -0.01;
    maxs[0] = 0.01;
    store.insert("fc1.w.min", Tensor::f32(vec![32], mins).unwrap());
    store.insert("fc1.w.max", Tensor::f32(vec![32], maxs).unwrap());
    for (name, v) in [("relu1", 8.0f32), ("fc2.w", 1.0)] {
        let n = store.get(&format!("{name}.min")).unwrap().shape.clone();
        let len = n.iter().product();
        store.insert(
            &format!("{name}.min"),
            Tensor::f32(n.clone(), vec![-v; len]).unwrap(),
        );
        store.insert(
            &format!("{name}.max"),
            Tensor::f32(n, vec![v; len]).unwrap(),
        );
    }
    let data = common::digits();
    let feed = Feed::for_graph(&g, data.train.example_dims()).unwrap();
    let batches: Vec<_> = feed
        .batches(
            &data.train,
            shuffled(data.train.len(), 0, 0),
            32,
            1.0 / 16.0,
        )
        .take(3)
        .map(|b| b.unwrap().inputs)
        .collect();
    let before = store.clone();
    let sites = site_values(
        &g,
        &store,
        &batches,
        &qir_interp::Interpreter::default(),
        64,
    )
    .unwrap();
    assert_eq!(store, before, "the store is not changed");
    let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["%x", "%fc1.w", "%relu1", "%fc2.w"]);

    // %x: every pixel of the three batches, those above 0.5 clipped
    let pixels: Vec<f32> = batches
        .iter()
        .flat_map(|b| b["x"].as_f32().unwrap().to_vec())
        .collect();
    let x = &sites[0];
    assert_eq!(x.total, pixels.len() as u64);
    assert_eq!(
        x.clipped,
        pixels.iter().filter(|&&p| p > 0.5).count() as u64
    );
    assert_eq!(x.hist.counts.iter().sum::<u64>(), x.total);
    assert_eq!(x.range, (0.0, 0.5));
    let (s, z) = x.qparams.unwrap();
    assert_eq!(z, 0);
    assert!((s - 0.5 / 255.0).abs() < 1e-12, "{s}");
    assert_eq!(x.qrange, Some((0, 255)));

    // %fc1.w: counted once although three batches ran; channel 0's weights beyond 0.01
    let fc1 = &sites[1];
    assert_eq!(fc1.total, 32 * 64);
    assert_eq!(
        fc1.clipped,
        w[..64].iter().filter(|v| v.abs() > 0.01).count() as u64
    );
    assert!(fc1.clipped > 0);
    assert_eq!(fc1.clip.len(), 32);
    assert_eq!(fc1.qparams, None, "per channel: no single grid");
}
