//! DEX texts of any size for the memory tests and benchmark: one machine's audit with as many
//! selections as fit (the shape of a real file, only longer), and the shapes that make the most
//! output per input byte.

/// The shapes of synthetic DEX text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DexShape {
    /// One audit: header, totals, then a PA1/PA2 pair per selection, each selection distinct.
    Products,
    /// One file of `PA1` lines, each a product of its own: the most parsed form per byte.
    BareProducts,
    /// One file of one-letter unknown segments, each kept in `other_segments`.
    UnknownSegments,
    /// `DXS` lines only: a new, empty file per line (the parser stops counting at 100,000).
    EmptyFiles,
}

impl DexShape {
    pub const ALL: [DexShape; 4] = [
        DexShape::Products,
        DexShape::BareProducts,
        DexShape::UnknownSegments,
        DexShape::EmptyFiles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DexShape::Products => "one audit, many selections",
            DexShape::BareProducts => "bare PA1 lines",
            DexShape::UnknownSegments => "one-letter unknown segments",
            DexShape::EmptyFiles => "empty DXS files",
        }
    }
}

/// A text of `shape` exactly `len` bytes long (blank lines pad the end).
pub fn dex_text(shape: DexShape, len: usize) -> String {
    let mut text = match shape {
        DexShape::Products => {
            "DXS*RHV7654321*VA*V0/6*1\r\nST*001*0001\r\nID1*123456789*MODEL1*0001\r\nID4*2*49*1\r\n\
             VA1*586530*9612*586530*9592\r\nCA2*30000*120*30000*120\r\n"
                .to_string()
        }
        DexShape::BareProducts | DexShape::UnknownSegments => "DXS*X\nST*001*0001\n".to_string(),
        DexShape::EmptyFiles => String::new(),
    };
    let mut selection = 0u64;
    loop {
        selection += 1;
        let next = match shape {
            DexShape::Products => format!(
                "PA1*{selection}*{}*PRODUCT {selection}\r\nPA2*{}*{}*{}*{}\r\n",
                100 + selection % 250,
                selection % 700,
                (selection % 700) * 150,
                selection % 90,
                (selection % 90) * 150
            ),
            DexShape::BareProducts => "PA1\n".to_string(),
            DexShape::UnknownSegments => "Z\n".to_string(),
            DexShape::EmptyFiles => "DXS\n".to_string(),
        };
        if text.len() + next.len() > len {
            break;
        }
        text.push_str(&next);
    }
    while text.len() < len {
        text.push('\n');
    }
    text
}
