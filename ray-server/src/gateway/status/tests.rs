use super::render::{PAGE, escape};

#[test]
fn the_page_is_small_and_names_no_other_host() {
    assert!(PAGE.len() < 50 * 1024, "{} bytes", PAGE.len());
    assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
}

#[test]
fn text_is_escaped() {
    assert_eq!(
        escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}
