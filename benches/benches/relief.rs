//! The relief generator at 1, 4 and 16 megapixels (decode included, one
//! thread), and glTF writing on its own.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use image2model_core::domain::{ImageKind, Texture};
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::gltf::{read_glb, write_glb};
use image2model_core::testing::images;

fn bench_relief(c: &mut Criterion) {
    let generator = ReliefGenerator::default();
    let mut g = c.benchmark_group("relief");
    g.sample_size(10);
    for side in [1024u32, 2048, 4096] {
        let mp = side * side / 1_000_000;
        let jpeg = images::encode_jpeg(&images::photo_like(side, side));
        g.bench_with_input(
            BenchmarkId::new("jpeg", format!("{mp}MP")),
            &jpeg,
            |b, jpeg| {
                b.iter(|| {
                    generator
                        .render(black_box(jpeg), ImageKind::Jpeg, None, Texture::Standard)
                        .unwrap()
                });
            },
        );
    }
    let png = images::encode_png(&images::photo_like(4096, 4096));
    g.bench_function(BenchmarkId::new("png", "16MP"), |b| {
        b.iter(|| {
            generator
                .render(black_box(&png), ImageKind::Png, None, Texture::Standard)
                .unwrap()
        });
    });
    g.finish();
}

fn bench_gltf_write(c: &mut Criterion) {
    let generator = ReliefGenerator::default();
    let glb = generator
        .render(
            &images::png(512, 512),
            ImageKind::Png,
            None,
            Texture::Standard,
        )
        .unwrap();
    let mesh = read_glb(&glb).unwrap();
    c.bench_function("gltf/write_20k_faces", |b| {
        b.iter(|| write_glb(black_box(&mesh)).unwrap())
    });
}

criterion_group!(benches, bench_relief, bench_gltf_write);
criterion_main!(benches);
