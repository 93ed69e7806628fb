//! Virtuous webhooks end to end (issue 4): registration, confirmation without a pass, bad input.
