"""Pure, reusable steps of a trace: validate, join, mask, derive."""
