//! The README's SQL examples, for the tests that run them as written.

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
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sql") => current = Some(String::new()),
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
