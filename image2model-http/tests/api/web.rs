use crate::helpers::spawn_app;

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_inline_script() {
    let app = spawn_app().await;

    let page = app.get("/", None).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();

    assert!(html.contains("<script src=\"/static/app.js\" type=\"module\"></script>"));
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style=\""), "no inline style");
    for (asset, mime) in [
        ("/static/app.js", "text/javascript"),
        ("/static/viewer.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let resp = app.get(asset, None).await;
        assert_eq!(resp.status(), 200, "{asset}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(mime)
        );
        assert!(!resp.text().await.unwrap().is_empty(), "{asset} is empty");
    }
}
