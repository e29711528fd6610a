//! The SQL examples of the README and of the pages in docs/, for the tests that run them as
//! written, and the links between those texts.

use std::path::{Path, PathBuf};

/// The pages of `docs/` whose ```sql examples `tests/readme.rs` runs after the README's, in this
/// order and in one cluster: each page goes on from what the README and the pages before it left
/// (the extension created and configured, runs recorded, roles made, DEX files stored).
pub const PAGES_IN_ORDER: &[&str] = &[
    "configuration.md",
    "scheduling.md",
    "privileges.md",
    "monitoring.md",
    "dex-sql.md",
    "operations.md",
];

/// The pages of `docs/` whose SQL examples a test of their own runs: `hosted.md` in
/// `tests/hosted.rs`, on two clusters.
pub const PAGES_RUN_ELSEWHERE: &[&str] = &["hosted.md"];

/// The pages of `docs/` without SQL examples.
pub const PAGES_WITHOUT_SQL: &[&str] = &["contract.md", "supabase-image.md"];

/// The page, and the heading of its section, whose examples run on a Supabase-configured cluster
/// (`tests/supabase.rs`) instead of with the rest of the page.
pub const SUPABASE_PAGE: &str = "privileges.md";
pub const SUPABASE_SECTION: &str = "## Self-hosted Supabase";

/// The repository's top directory, where the README is.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A page of `docs/` by file name, read now.
pub fn page(name: &str) -> String {
    let path = repository_root().join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The file names of every `.md` page in `docs/`, sorted.
pub fn pages_in_docs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repository_root().join("docs"))
        .expect("docs/ can be listed")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    names
}

/// The section under `heading` (up to the next heading of its level), and the rest of the text.
pub fn section(markdown: &str, heading: &str) -> (String, String) {
    let Some(start) = markdown.find(heading) else {
        return (String::new(), markdown.to_string());
    };
    let level = heading.split(' ').next().unwrap_or("###");
    let after_heading = start + heading.len();
    let end = markdown[after_heading..]
        .find(&format!("\n{level} "))
        .map_or(markdown.len(), |offset| after_heading + offset + 1);
    (
        markdown[start..end].to_string(),
        format!("{}{}", &markdown[..start], &markdown[end..]),
    )
}

/// The fenced ```sql blocks of a Markdown text, in order.
pub fn sql_blocks(markdown: &str) -> Vec<String> {
    fenced_blocks(markdown, "sql")
}

/// The fenced blocks of a Markdown text in `language` (```text, ```sh, ...), in order.
pub fn fenced_blocks(markdown: &str, language: &str) -> Vec<String> {
    let opening = format!("```{language}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, text) if text == opening => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The lines of a Markdown text outside its fenced blocks.
fn prose_lines(markdown: &str) -> Vec<&str> {
    let mut in_fence = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .collect()
}

/// The anchors of a Markdown text's headings, as GitHub makes them: lower case, punctuation
/// dropped (but `-` and `_`), spaces made `-`.
pub fn anchors(markdown: &str) -> Vec<String> {
    prose_lines(markdown)
        .into_iter()
        .filter_map(|line| {
            let title = line.trim_start_matches('#');
            (title.len() < line.len() && title.starts_with(' ')).then_some(title.trim())
        })
        .map(|title| {
            title
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The targets of a Markdown text's `[text](target)` links outside its fenced blocks, web
/// addresses left out.
pub fn local_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in prose_lines(markdown) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    links
}
