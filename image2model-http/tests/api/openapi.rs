//! The generated OpenAPI document against the checked-in snapshot, so that an
//! API change is always a visible diff. `UPDATE_SNAPSHOTS=1` rewrites it.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// The OpenAPI document a freshly started server serves.
async fn document() -> Value {
    let resp = spawn_app().await.get("/api/v1/openapi.json", None).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/openapi.snapshot.json"
);

#[tokio::test]
async fn the_openapi_document_matches_the_snapshot() {
    let spec = document().await;
    let pretty = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_else(|_| {
        panic!("no snapshot at {SNAPSHOT}: run with UPDATE_SNAPSHOTS=1 to write it, then review and commit it")
    });
    if expected != pretty {
        let (line, (want, got)) = expected
            .lines()
            .zip(pretty.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, pair)| (i + 1, pair))
            .unwrap_or((
                expected.lines().count().min(pretty.lines().count()) + 1,
                ("<end>", "<end>"),
            ));
        panic!(
            "the OpenAPI document changed (first difference at line {line}):\n  snapshot: {want}\n  now:      {got}\n\
             If the change is intended, run `UPDATE_SNAPSHOTS=1 cargo test -p image2model-http --test api openapi` and commit the snapshot."
        );
    }
}

#[tokio::test]
async fn the_document_declares_bearer_auth_and_the_multipart_body() {
    let spec = document().await;

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["UserKey"]["scheme"], "bearer");
    assert_eq!(schemes["AdminKey"]["scheme"], "bearer");
    let upload = &spec["paths"]["/upload"]["post"];
    assert!(upload["requestBody"]["content"]["multipart/form-data"].is_object());
    for status in ["202", "400", "401", "413", "415", "429"] {
        assert!(
            upload["responses"][status].is_object(),
            "upload lacks {status}"
        );
    }
    let model = &spec["paths"]["/jobs/{job_id}/items/{item_id}/model"]["get"];
    assert!(model["responses"]["200"]["content"]["model/gltf-binary"].is_object());
    assert_eq!(spec["servers"][0]["url"], "/api/v1");
}

/// The operations that take no API key, each with why:
/// - the signed download link: the link's signature (under a key derived
///   from `SECRET_KEY`) is the credential, so that a plain `curl` or a
///   browser navigation can fetch the model; it is still rate limited per
///   IP (429) like every API request.
const PUBLIC_OPERATIONS: &[&str] = &["get /links/{job_id}/{item_id}/{format}"];

/// 401 and 429 (and 403 for admin operations) are documented once, by the
/// handlers' error types, not by each operation: this holds them to every
/// operation, and every operation to a security scheme, except the few
/// public ones, which must document 429 and no 401.
#[tokio::test]
async fn every_operation_is_secured_and_documents_its_refusals() {
    let spec = document().await;

    let mut operations = 0;
    let mut public = vec![];
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            operations += 1;
            let name = format!("{method} {path}");
            if PUBLIC_OPERATIONS.contains(&name.as_str()) {
                assert!(
                    op["security"].as_array().is_none_or(Vec::is_empty),
                    "{name} is public: {}",
                    op["security"]
                );
                let responses = &op["responses"];
                assert!(responses["401"].is_null(), "{name} takes no key: no 401");
                assert!(
                    responses["429"]["headers"]["RETRY-AFTER"].is_object(),
                    "{name} lacks 429 with Retry-After"
                );
                public.push(name);
                continue;
            }
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} is not secured"))
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys())
                .map(String::as_str)
                .collect();
            let admin = schemes == ["AdminKey"];
            assert!(admin || schemes == ["UserKey"], "{name}: {schemes:?}");
            let responses = &op["responses"];
            assert!(
                responses["401"]["headers"]["WWW-AUTHENTICATE"].is_object(),
                "{name} lacks 401 with WWW-Authenticate"
            );
            assert!(
                responses["429"]["headers"]["RETRY-AFTER"].is_object(),
                "{name} lacks 429 with Retry-After"
            );
            assert_eq!(
                responses["403"].is_object(),
                admin,
                "{name}: 403 is documented for admin operations only"
            );
        }
    }
    assert!(operations >= 19, "{operations} operations looked at");
    assert_eq!(
        public, PUBLIC_OPERATIONS,
        "every public operation is served"
    );
}

#[tokio::test]
async fn the_link_operations_are_documented() {
    let spec = document().await;

    let create = &spec["paths"]["/jobs/{job_id}/items/{item_id}/link"]["post"];
    assert_eq!(create["security"][0]["UserKey"], serde_json::json!([]));
    for status in ["200", "400", "401", "404", "409", "429"] {
        assert!(
            create["responses"][status].is_object(),
            "create lacks {status}"
        );
    }
    let params: Vec<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"format") && params.contains(&"expires_in_seconds"));
    let body = &create["responses"]["200"]["content"]["application/json; charset=utf-8"];
    assert!(body.is_object(), "{create}");
    let get = &spec["paths"]["/links/{job_id}/{item_id}/{format}"]["get"];
    assert!(get["responses"]["200"]["content"]["model/gltf-binary"].is_object());
    for status in ["403", "404", "409", "410", "429"] {
        assert!(get["responses"][status].is_object(), "link lacks {status}");
    }
}

/// What the derives cannot say is added to the document
/// (`api::document`): every refinement finds what it refines, and what
/// it adds is served.
#[tokio::test]
async fn the_refinements_apply_and_are_served() {
    use image2model_http::api::document::{Facts, refine};

    let app = spawn_app().await;
    let state = &app.app.state;
    let mut raw: Value =
        serde_json::from_str(&image2model_http::api::service(state).spec()).unwrap();
    assert_eq!(refine(&mut raw, &Facts::of(state)), Vec::<String>::new());
    let spec: Value = app
        .get("/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(spec, raw, "the served document is the refined one");

    // The upload: the models offered, the files' media types, no other field.
    let form = &spec["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"];
    assert_eq!(
        form["encoding"]["files"]["contentType"],
        "image/png, image/jpeg, image/webp"
    );
    assert_eq!(form["schema"]["additionalProperties"], false);
    let policy: Value = app
        .get("/api/v1/upload", Some(crate::helpers::USER_KEY))
        .await
        .json()
        .await
        .unwrap();
    let offered: Vec<&Value> = policy["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["name"])
        .collect();
    let documented: Vec<&Value> = form["schema"]["properties"]["model"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(documented, offered);
    // Links from a new job to what takes its ids.
    let links = &spec["paths"]["/upload"]["post"]["responses"]["202"]["links"];
    assert_eq!(links["DownloadModel"]["operationId"], "download_model");
    assert_eq!(
        links["DownloadModel"]["parameters"]["item_id"],
        "$response.body#/items/0/item_id"
    );
    // Unsigned integers are bounded.
    let limit = &spec["paths"]["/jobs"]["get"]["parameters"][0]["schema"];
    assert_eq!(limit["minimum"], 1.0);
    let size = &spec["components"]["schemas"]["Item"]["properties"]["size_bytes"];
    assert_eq!(
        (&size["minimum"], &size["maximum"]),
        (&json!(0), &json!(u64::MAX))
    );
    // Events, one at a time, with their payload's schema.
    let event = &spec["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(
        event["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/Job"
    );
}

/// Every operation that reads a JSON body says what a body over the limit
/// (413) and a body that is not JSON (415) get, and a request that sends
/// one gets it.
#[tokio::test]
async fn json_bodies_document_their_refusals() {
    let app = spawn_app().await;
    let spec = document().await;
    let mut operations = 0;
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.keys().any(|k| k.starts_with("application/json")));
            if !json_body {
                continue;
            }
            operations += 1;
            for status in ["400", "413", "415"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
    assert!(operations >= 4, "{operations} operations with a JSON body");
    let resp = app
        .client
        .post(app.url("/api/v1/admin/cleanup"))
        .bearer_auth(crate::helpers::ADMIN_KEY)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = spawn_app().await;

    let resp = app.get("/docs", None).await;

    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("'unsafe-inline'"), "{csp}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("swagger"));
    assert!(
        page.contains("image/png, image/jpeg, image/webp"),
        "the page shows the refined document"
    );
}
