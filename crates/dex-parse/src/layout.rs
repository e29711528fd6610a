//! Which element of which segment means what.
//!
//! Names follow the EVA-DTS data dictionary. Elements after the named ones
//! are kept raw in `extra_elements` rather than guessed at.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Trimmed text; empty is null.
    Text,
    /// An unsigned integer (a count, a number, an index).
    Count,
    /// An unsigned integer in the currency's smallest unit, output in
    /// currency units using ID401's decimal places.
    Money,
    /// A date, output as `YYYY-MM-DD`.
    Date,
    /// A time, output as `HH:MM` or `HH:MM:SS`.
    Time,
}

use Kind::{Count, Date, Money, Text, Time};

#[derive(Debug)]
pub(crate) struct Layout {
    pub id: &'static str,
    pub fields: &'static [(&'static str, Kind)],
}

const fn layout(id: &'static str, fields: &'static [(&'static str, Kind)]) -> Layout {
    Layout { id, fields }
}

const DEVICE_ID: &[(&str, Kind)] = &[
    ("serial", Text),
    ("model", Text),
    ("software_version", Text),
];

/// Value before count: VA1-VA3, CA2, DA2, DB2, TA2.
const VALUE_COUNT: &[(&str, Kind)] = &[
    ("value_since_init", Money),
    ("count_since_init", Count),
    ("value_since_reset", Money),
    ("count_since_reset", Count),
];

/// Count before value: PA2-PA4. Mixing these up with [`VALUE_COUNT`] is a
/// classic way to misread product counters.
const COUNT_VALUE: &[(&str, Kind)] = &[
    ("count_since_init", Count),
    ("value_since_init", Money),
    ("count_since_reset", Count),
    ("value_since_reset", Money),
];

pub(crate) static DXS: Layout = layout(
    "DXS",
    &[
        ("communication_id", Text),
        ("functional_id", Text),
        ("version", Text),
        ("transmission_control", Text),
    ],
);
pub(crate) static ST: Layout = layout("ST", &[("set_id", Text), ("control_number", Text)]);
pub(crate) static SE: Layout = layout("SE", &[("segment_count", Count), ("control_number", Text)]);
pub(crate) static DXE: Layout = layout(
    "DXE",
    &[("transmission_control", Text), ("set_count", Count)],
);

pub(crate) static ID1: Layout = layout(
    "ID1",
    &[("serial", Text), ("model", Text), ("build_standard", Text)],
);
pub(crate) static ID4: Layout = layout(
    "ID4",
    &[
        ("decimal_places", Count),
        ("currency_numeric_code", Text),
        ("currency_alpha_code", Text),
    ],
);
pub(crate) static ID5: Layout = layout("ID5", &[("date", Date), ("time", Time)]);
pub(crate) static CB1: Layout = layout("CB1", DEVICE_ID);

pub(crate) static VA1: Layout = layout(
    "VA1",
    &[
        ("value_since_init", Money),
        ("count_since_init", Count),
        ("value_since_reset", Money),
        ("count_since_reset", Count),
        ("discount_value_since_init", Money),
        ("discount_count_since_init", Count),
        ("discount_value_since_reset", Money),
        ("discount_count_since_reset", Count),
        ("surcharge_value_since_init", Money),
        ("surcharge_count_since_init", Count),
        ("surcharge_value_since_reset", Money),
        ("surcharge_count_since_reset", Count),
    ],
);
pub(crate) static VA2: Layout = layout("VA2", VALUE_COUNT);
pub(crate) static VA3: Layout = layout("VA3", VALUE_COUNT);
pub(crate) static CA2: Layout = layout("CA2", VALUE_COUNT);
pub(crate) static DA2: Layout = layout("DA2", VALUE_COUNT);
pub(crate) static DB2: Layout = layout("DB2", VALUE_COUNT);
pub(crate) static TA2: Layout = layout("TA2", VALUE_COUNT);

pub(crate) static CA1: Layout = layout("CA1", DEVICE_ID);
pub(crate) static BA1: Layout = layout("BA1", DEVICE_ID);
pub(crate) static DA1: Layout = layout("DA1", DEVICE_ID);
pub(crate) static DB1: Layout = layout("DB1", DEVICE_ID);
pub(crate) static CA3: Layout = layout(
    "CA3",
    &[
        ("cash_in_since_reset", Money),
        ("to_cashbox_since_reset", Money),
        ("to_tubes_since_reset", Money),
        ("bills_in_since_reset", Money),
        ("cash_in_since_init", Money),
        ("to_cashbox_since_init", Money),
        ("to_tubes_since_init", Money),
        ("bills_in_since_init", Money),
    ],
);
pub(crate) static CA4: Layout = layout(
    "CA4",
    &[
        ("dispensed_since_reset", Money),
        ("manually_dispensed_since_reset", Money),
        ("dispensed_since_init", Money),
        ("manually_dispensed_since_init", Money),
    ],
);
pub(crate) static CA10: Layout = layout(
    "CA10",
    &[("filled_since_reset", Money), ("filled_since_init", Money)],
);
pub(crate) static CA15: Layout = layout("CA15", &[("value", Money)]);
pub(crate) static CA17: Layout = layout(
    "CA17",
    &[
        ("tube", Count),
        ("coin_value", Money),
        ("coin_count", Count),
        ("manually_filled_count", Count),
        ("manually_dispensed_count", Count),
    ],
);

pub(crate) static PA1: Layout = layout(
    "PA1",
    &[("selection", Text), ("price", Money), ("name", Text)],
);
pub(crate) static PA2: Layout = layout(
    "PA2",
    &[
        ("count_since_init", Count),
        ("value_since_init", Money),
        ("count_since_reset", Count),
        ("value_since_reset", Money),
        ("discount_count_since_init", Count),
        ("discount_value_since_init", Money),
        ("discount_count_since_reset", Count),
        ("discount_value_since_reset", Money),
        ("surcharge_count_since_init", Count),
        ("surcharge_value_since_init", Money),
        ("surcharge_count_since_reset", Count),
        ("surcharge_value_since_reset", Money),
    ],
);
pub(crate) static PA3: Layout = layout("PA3", COUNT_VALUE);
pub(crate) static PA4: Layout = layout("PA4", COUNT_VALUE);
/// PA5 is a date, a time and a counter. EVA-DTS calls it sold-out data;
/// some machines write their last sale here, so the keys stay neutral.
pub(crate) static PA5: Layout = layout("PA5", &[("date", Date), ("time", Time), ("count", Count)]);
pub(crate) static PA7: Layout = layout(
    "PA7",
    &[
        ("selection", Text),
        ("payment_device", Text),
        ("price_list", Count),
        ("price", Money),
        ("count_since_init", Count),
        ("value_since_init", Money),
        ("count_since_reset", Count),
        ("value_since_reset", Money),
    ],
);

pub(crate) static EA1: Layout = layout(
    "EA1",
    &[
        ("event", Text),
        ("date", Date),
        ("time", Time),
        ("duration_minutes", Count),
    ],
);
pub(crate) static EA2: Layout = layout(
    "EA2",
    &[
        ("event", Text),
        ("count_since_reset", Count),
        ("count_since_init", Count),
    ],
);
pub(crate) static EA3: Layout = layout(
    "EA3",
    &[
        ("reads_with_reset_since_init", Count),
        ("read_date", Date),
        ("read_time", Time),
        ("terminal_id", Text),
        ("previous_read_date", Date),
        ("previous_read_time", Time),
        ("previous_terminal_id", Text),
    ],
);
pub(crate) static EA7: Layout = layout(
    "EA7",
    &[
        ("outages_since_reset", Count),
        ("outages_since_init", Count),
    ],
);
