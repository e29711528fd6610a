//! Any number of synthetic companies in the design's schema (`tests/fixtures/sample_schema.sql`),
//! for the benchmark: every one a target of the default rule, with credentials, so that a run
//! calls the endpoint for each of them.
//!
//! Loaded with one `INSERT ... SELECT generate_series` per table: 10,000 companies take well under
//! a second, so the benchmark can reload between cases.

/// Active machines per synthetic company (the sample schema's companies have three too).
pub const MACHINES_PER_COMPANY: i32 = 3;

/// The id of synthetic company `n` (1-based): `c0000000-0000-4000-8000-` and `n` in 12 hex digits.
pub fn company_id(n: u32) -> String {
    format!("c0000000-0000-4000-8000-{n:012x}")
}

/// Replaces every company, machine and credentials row with `companies` synthetic companies, each
/// with [`MACHINES_PER_COMPANY`] active machines and one credentials row with a `dex_username`,
/// then refreshes the planner's statistics so the targets query is planned for the new sizes.
pub fn load_companies(
    client: &mut postgres::Client,
    companies: u32,
) -> Result<(), postgres::Error> {
    let companies = i64::from(companies);
    let mut transaction = client.transaction()?;
    transaction
        .batch_execute("TRUNCATE public.user_credentials, public.machines, public.companies")?;
    transaction.execute(
        "INSERT INTO public.companies (id, company_name)
         SELECT ('c0000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                'Synthetic Vending ' || lpad(n::text, 6, '0')
           FROM generate_series(1, $1::bigint) AS n",
        &[&companies],
    )?;
    transaction.execute(
        "INSERT INTO public.machines (company_id, case_serial, status)
         SELECT c.id, 'SYN-' || right(c.id::text, 6) || '-' || m, 'active'
           FROM public.companies c CROSS JOIN generate_series(1, $1::integer) AS m",
        &[&MACHINES_PER_COMPANY],
    )?;
    transaction.batch_execute(
        "INSERT INTO public.user_credentials (company_id, dex_username, dex_password, dex_site_url)
         SELECT c.id, 'user.' || right(c.id::text, 6), 'not-a-real-password',
                'https://dashboard.cantaloupe.example/' || right(c.id::text, 6)
           FROM public.companies c",
    )?;
    transaction.commit()?;
    client.batch_execute("ANALYZE public.companies, public.machines, public.user_credentials")
}
