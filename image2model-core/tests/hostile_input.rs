//! Regression tests for hostile inputs found while writing and running the
//! fuzz targets (`fuzz/`): each feeds an input that broke a target's bound
//! through the same public function the target calls.

use image2model_core::generators::fal::sse::{MAX_EVENT, SseReader};
use image2model_core::gltf::reader::{MIN_ELEMENT_LIMIT, element_limits};
use image2model_core::gltf::{GltfError, ModelFormat, convert, read_glb};
use serde_json::{Value, json};

/// A GLB with `json` as its JSON chunk and no BIN chunk.
fn glb(json: &Value) -> Vec<u8> {
    let mut body = serde_json::to_vec(json).unwrap();
    body.resize(body.len().next_multiple_of(4), b' ');
    let total = 12 + 8 + body.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&u32::try_from(total).unwrap().to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&body);
    out
}

/// One mesh whose POSITION accessor has `count` vertices and no buffer view
/// (so zeros but for one sparse value: no bytes in the file), drawn by
/// `nodes` nodes.
fn zeros_model(count: usize, nodes: usize) -> Vec<u8> {
    let node_list: Vec<Value> = (0..nodes).map(|_| json!({ "mesh": 0 })).collect();
    let roots: Vec<usize> = (0..nodes).collect();
    glb(&json!({
        "asset": { "version": "2.0" },
        "scenes": [{ "nodes": roots }],
        "nodes": node_list,
        "meshes": [{ "primitives": [{ "attributes": { "POSITION": 0 } }] }],
        // One sparse value (index 0 → (0, 0, 0)): the specification asks
        // for it on an accessor without a view.
        "buffers": [{
            "byteLength": 16,
            "uri": "data:application/octet-stream;base64,AAAAAAAAAAAAAAAAAAAAAA=="
        }],
        "bufferViews": [
            { "buffer": 0, "byteLength": 2 },
            { "buffer": 0, "byteOffset": 4, "byteLength": 12 }
        ],
        "accessors": [{
            "componentType": 5126, "count": count, "type": "VEC3",
            "min": [0, 0, 0], "max": [0, 0, 0],
            "sparse": {
                "count": 1,
                "indices": { "bufferView": 0, "componentType": 5123 },
                "values": { "bufferView": 1 }
            }
        }]
    }))
}

/// Found while writing the size bound of `convert_obj_stl`: a GLB of about 500 bytes
/// whose accessor has no buffer view asked for 8 million vertices (the old
/// fixed cap), so the reader allocated about 200 MB and OBJ conversion
/// several hundred more. The limit now scales with the input's size.
#[test]
fn a_tiny_glb_cannot_ask_for_millions_of_vertices_without_bytes() {
    let model = zeros_model(7_999_998, 1);
    assert!(model.len() < 700, "{} bytes", model.len());

    let err = read_glb(&model).unwrap_err();

    assert!(matches!(err, GltfError::TooLarge(_)), "{err:?}");
    assert!(matches!(
        convert(&model, ModelFormat::Obj),
        Err(GltfError::TooLarge(_))
    ));
}

/// The same amplification through instancing: one small mesh drawn by many
/// nodes adds up past the size-scaled limit.
#[test]
fn instancing_cannot_multiply_a_mesh_past_the_size_scaled_limit() {
    let model = zeros_model(30_000, 300);
    let (max_vertices, _) = element_limits(model.len());
    assert!(30_000 * 300 > max_vertices);

    assert!(matches!(read_glb(&model), Err(GltfError::TooLarge(_))));
}

/// Within the limit, accessors without a buffer view still read (the
/// specification allows them: their values are zeros).
#[test]
fn a_small_accessor_without_a_view_still_reads() {
    let model = zeros_model(MIN_ELEMENT_LIMIT / 4 * 3, 1);

    let mesh = read_glb(&model).unwrap();

    assert_eq!(mesh.positions.len(), MIN_ELEMENT_LIMIT / 4 * 3);
    let stl = convert(&model, ModelFormat::Stl).unwrap();
    assert_eq!(stl.len(), 84 + 50 * mesh.triangle_count());
}

/// Found while writing the event bound of `fal_responses`: the status stream measured
/// an event's data before decoding it, and each invalid UTF-8 byte becomes
/// a three-byte U+FFFD, so two 200 kB data lines of invalid bytes made an
/// event of 1.2 MB, past the 1 MiB bound.
#[test]
fn a_status_stream_event_is_bounded_after_decoding() {
    let mut line = b"data: ".to_vec();
    line.extend(std::iter::repeat_n(0xFF, 200 * 1024));
    line.push(b'\n');
    let mut reader = SseReader::default();
    let mut refused = false;
    for chunk in [&line[..], &line[..], b"\n"] {
        match reader.push(chunk) {
            Ok(events) => assert!(
                events.iter().all(|e| e.len() <= MAX_EVENT),
                "an event of {} bytes",
                events.iter().map(String::len).max().unwrap_or(0)
            ),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the oversized event is refused");
}
