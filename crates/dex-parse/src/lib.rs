//! DEX parser (being written)
