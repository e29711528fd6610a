//! The SQL examples of the README and of the pages in docs/, for the tests that run them as
//! written.

/// The heading of the section whose examples run on a Supabase-configured cluster.
pub const SUPABASE_SECTION: &str = "### Self-hosted Supabase";

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
