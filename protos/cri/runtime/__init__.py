"""CRI proto package `runtime`."""
