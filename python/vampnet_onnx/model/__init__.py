"""Export-friendly torch modules (export-time only: this package imports torch)."""
