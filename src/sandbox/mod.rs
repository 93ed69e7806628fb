//! A faithful Virtuous CRM+ simulator (DESIGN.md §7). Filled in by the sandbox work.
