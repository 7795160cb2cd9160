//! `?format=obj.zip`: the OBJ with its material and texture, so a textured
//! model stays textured in Blender.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, texture_png, textured_glb};
use serde_json::Value;

use crate::helpers::{USER_KEY, png, spawn_app, spawn_app_with_fal};

/// Every file of a zip, by name.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        files.insert(file.name().unwrap().into_owned(), data);
    }
    files
}

/// The value after `keyword ` on the lines of `text` that start with it.
fn values<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(keyword)?.strip_prefix(' '))
        .map(str::trim)
        .collect()
}

#[tokio::test]
async fn an_obj_zip_holds_the_obj_its_mtl_and_the_glbs_texture_referring_to_each_other() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = spawn_app_with_fal(&fake).await;
    let job = app.upload_ok(vec![("chäir.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let resp = app.download(&url, Some("obj.zip"), USER_KEY).await;
    let plain = app.download(&url, Some("obj"), USER_KEY).await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"ch_ir.zip\"; filename*=UTF-8''ch%C3%A4ir.zip"
    );
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["model.mtl", "model.obj", "texture_0.png"]
    );
    assert!(length > 0);
    let obj = std::str::from_utf8(&files["model.obj"]).unwrap();
    let mtl = std::str::from_utf8(&files["model.mtl"]).unwrap();
    // The OBJ names the MTL, and uses a material the MTL defines.
    assert_eq!(values(obj, "mtllib"), ["model.mtl"]);
    let used = values(obj, "usemtl");
    assert_eq!(used.len(), 1);
    assert_eq!(values(mtl, "newmtl"), used);
    // The MTL's texture is the file in the zip, byte for byte the GLB's
    // embedded image; Kd is the base-colour factor.
    assert_eq!(values(mtl, "map_Kd"), ["texture_0.png"]);
    assert_eq!(files["texture_0.png"], texture_png());
    let glb = gltf::Gltf::from_slice(&textured_glb()).unwrap();
    let material = glb.materials().next().unwrap();
    let factor = material.pbr_metallic_roughness().base_color_factor();
    let kd: Vec<f32> = values(mtl, "Kd")[0]
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(kd, factor[..3]);
    // UVs and normals for every vertex, and faces that use both.
    assert_eq!(values(obj, "v").len(), 24);
    assert_eq!(values(obj, "vt").len(), 24);
    assert_eq!(values(obj, "vn").len(), 24);
    let faces = values(obj, "f");
    assert_eq!(faces.len(), 12);
    assert!(
        faces.iter().all(|f| f.split(' ').all(|c| {
            let i: Vec<&str> = c.split('/').collect();
            i.len() == 3 && i[0] == i[1] && i[1] == i[2]
        })),
        "{faces:?}"
    );
    // The plain OBJ is unchanged for the clients that take it.
    assert_eq!(plain.headers()["content-type"], "model/obj");
    assert!(!plain.text().await.unwrap().contains("mtllib"));
}

#[tokio::test]
async fn an_untextured_models_obj_zip_has_an_mtl_with_its_colour_and_no_image() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("relief.png", png(16, 16))]).await;
    let done: Value = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let resp = app.download(&url, Some("obj.zip"), USER_KEY).await;

    assert_eq!(resp.status(), 200);
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["model.mtl", "model.obj"]
    );
    let obj = std::str::from_utf8(&files["model.obj"]).unwrap();
    let mtl = std::str::from_utf8(&files["model.mtl"]).unwrap();
    assert_eq!(values(obj, "mtllib"), ["model.mtl"]);
    assert_eq!(values(obj, "usemtl"), values(mtl, "newmtl"));
    assert_eq!(values(mtl, "Kd").len(), 1);
    assert!(values(mtl, "map_Kd").is_empty());
}

#[tokio::test]
async fn an_unknown_format_is_still_400_and_a_link_serves_obj_zip() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(16, 16))]).await;
    let done: Value = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let bad = app.download(&url, Some("zip"), USER_KEY).await;
    let link: Value = app
        .client
        .post(app.url(&format!(
            "{}/link?format=obj.zip",
            url.trim_end_matches("/model")
        )))
        .bearer_auth(USER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let via_link = app.get(link["url"].as_str().unwrap(), None).await;

    assert_eq!(bad.status(), 400);
    assert_eq!(link["format"], "obj.zip", "{link}");
    assert_eq!(via_link.status(), 200);
    assert_eq!(via_link.headers()["content-type"], "application/zip");
    assert!(unzip(&via_link.bytes().await.unwrap()).contains_key("model.mtl"));
}
