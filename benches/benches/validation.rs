//! Upload validation hot paths: magic-byte sniffing, header parsing, and the
//! whole streaming inspection of a 1 MB and a 10 MB image.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use image2model_benches::images::png_of_size;
use image2model_core::domain::ImageKind;
use image2model_core::testing::images;
use image2model_core::validate::{FileInspector, UploadLimits, dimensions, sniff};

fn bench_sniff_and_header(c: &mut Criterion) {
    let png = images::png(640, 480);
    let jpeg = images::jpeg(640, 480);
    let webp = images::webp(64, 48);
    let mut g = c.benchmark_group("header");
    g.bench_function("sniff_png", |b| b.iter(|| sniff(black_box(&png[..12]))));
    g.bench_function("dimensions_png", |b| {
        b.iter(|| dimensions(black_box(&png[..64]), ImageKind::Png))
    });
    g.bench_function("dimensions_jpeg", |b| {
        b.iter(|| dimensions(black_box(&jpeg), ImageKind::Jpeg))
    });
    g.bench_function("dimensions_webp", |b| {
        b.iter(|| dimensions(black_box(&webp), ImageKind::Webp))
    });
    g.finish();
}

fn bench_inspection(c: &mut Criterion) {
    let limits = UploadLimits {
        max_file_bytes: 12 << 20,
        max_request_bytes: 12 << 20,
        ..UploadLimits::default()
    };
    let mut g = c.benchmark_group("validate_upload");
    for size in [1usize << 20, 10 << 20] {
        let file = png_of_size(size);
        g.throughput(Throughput::Bytes(file.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}MB", size >> 20)),
            &file,
            |b, file| {
                b.iter(|| {
                    let mut inspector = FileInspector::new(limits, 0);
                    for chunk in file.chunks(64 * 1024) {
                        inspector.feed(chunk).unwrap();
                    }
                    black_box(inspector.finish().unwrap())
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_sniff_and_header, bench_inspection);
criterion_main!(benches);
