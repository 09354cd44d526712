"""Interop with other tools' log formats, one module per format: `inspect` (Inspect AI's `.eval`
and `.json` logs) converts an evalfleet log to that format, and imports a log of that format as a
handover directory (`handover`) that `evalfleet run -f` uploads with no model call."""

from shared.interop.inspect import convert_to_inspect, import_inspect_log

__all__ = ["convert_to_inspect", "import_inspect_log"]
