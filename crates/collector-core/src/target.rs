//! What a target is: a company a run considers, and the fair order a run calls targets in.

/// One company a run considers.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The company's uuid, lower-case and hyphenated (the `X-Company-ID` header).
    pub company_id: String,
    pub company_name: String,
    /// False: skipped without a request, as the design's "no DEX credentials configured".
    pub has_credentials: bool,
}

/// When a company was last called (whatever the outcome) and last collected, as run ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastCalls {
    pub called: Option<i64>,
    pub succeeded: Option<i64>,
}

/// The order a run calls its targets in, so that consecutive runs cut short by their deadline
/// still reach every company: never called first, then the longest since its last call, then
/// the longest since its last success; the targets query's own order breaks ties. Ordering by
/// the last call rather than the last success keeps a company that always fails from taking a
/// first slot in every run: it waits its turn like the others. `last_calls` is in `targets`'
/// order.
pub fn fair_order(targets: Vec<Target>, last_calls: &[LastCalls]) -> Vec<Target> {
    if last_calls.len() != targets.len() {
        return targets;
    }
    let mut keyed: Vec<(LastCalls, Target)> = last_calls.iter().copied().zip(targets).collect();
    // Stable, and None sorts before any run id.
    keyed.sort_by_key(|(last, _)| (last.called, last.succeeded));
    keyed.into_iter().map(|(_, target)| target).collect()
}

/// The targets query's rows with each company once, where its first row put it: a company joined
/// to several rows (a LEFT JOIN of its users) has credentials if any of them has, so that it does
/// not turn from collectable to skipped and back with the order the rows come in.
pub fn each_company_once(rows: Vec<Target>) -> Vec<Target> {
    let mut position: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(rows.len());
    let mut targets: Vec<Target> = Vec::with_capacity(rows.len());
    for row in rows {
        match position.get(&row.company_id) {
            Some(&index) => {
                if let Some(first) = targets.get_mut(index) {
                    first.has_credentials |= row.has_credentials;
                }
            }
            None => {
                position.insert(row.company_id.clone(), targets.len());
                targets.push(row);
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(names: &[&str]) -> Vec<Target> {
        names
            .iter()
            .enumerate()
            .map(|(n, name)| Target {
                company_id: format!("00000000-0000-4000-8000-{n:012}"),
                company_name: (*name).to_string(),
                has_credentials: true,
            })
            .collect()
    }

    fn names(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.company_name.as_str()).collect()
    }

    fn last(called: Option<i64>, succeeded: Option<i64>) -> LastCalls {
        LastCalls { called, succeeded }
    }

    #[test]
    fn never_called_first_then_longest_since_the_last_call() {
        let ordered = fair_order(
            targets(&["Acme", "Beta", "Coastal", "Delta", "Echo"]),
            &[
                last(Some(9), Some(9)),
                last(None, None),
                last(Some(3), Some(3)),
                last(Some(3), Some(1)),
                last(None, None),
            ],
        );
        assert_eq!(
            names(&ordered),
            ["Beta", "Echo", "Delta", "Coastal", "Acme"]
        );
    }

    #[test]
    fn a_company_that_always_fails_waits_its_turn() {
        // Failing was called in the last run and never succeeded; the others were left out.
        let ordered = fair_order(
            targets(&["Failing", "Left out", "Also left out"]),
            &[
                last(Some(5), None),
                last(Some(4), Some(4)),
                last(Some(4), Some(2)),
            ],
        );
        assert_eq!(names(&ordered), ["Also left out", "Left out", "Failing"]);
    }

    #[test]
    fn without_history_the_query_order_stands() {
        let original = targets(&["Zeta", "Alpha", "Mu"]);
        let ordered = fair_order(original.clone(), &[LastCalls::default(); 3]);
        assert_eq!(ordered, original);
        assert_eq!(
            fair_order(original.clone(), &[]),
            original,
            "lengths differ"
        );
    }

    #[test]
    fn a_company_in_several_rows_is_one_target_with_credentials_if_any_row_has_them() {
        let row = |n: u32, name: &str, has_credentials: bool| Target {
            company_id: format!("00000000-0000-4000-8000-{n:012}"),
            company_name: name.to_string(),
            has_credentials,
        };
        let rows = vec![
            row(1, "Acme", false),
            row(2, "Beta", false),
            row(1, "Acme (second user)", true),
            row(3, "Gamma", true),
            row(2, "Beta", false),
        ];
        assert_eq!(
            each_company_once(rows),
            vec![
                row(1, "Acme", true),
                row(2, "Beta", false),
                row(3, "Gamma", true)
            ]
        );
    }
}
