//! Reading `/metrics` in tests: one scrape, and one series' value from it.

/// `/metrics` at `base` (`http://host:port`), checked to be Prometheus text.
pub async fn scrape(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    r.text().await.unwrap()
}

/// The value of the series written exactly as `series` (name plus labels), 0 when absent.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
