"""Inspect AI's evaluation logs (inspect-ai 0.3.x, log version 2), both ways:

* `convert_to_inspect` (`writer`) writes an evalfleet task result log as one Inspect log, `.eval`
  (a zip of DEFLATE members: header, one member per sample, sample summaries) or `.json`, named
  as Inspect names its logs, so `read_eval_log`, `inspect log list` and the log viewer read it.
  evalfleet's data that Inspect has no field for (evaluation, task specification, cache policy,
  each sample's prompt, latency, worker...) travels in `metadata` under the key `evalfleet`.
* `import_inspect_log` (`importer`, over `reader` and `samples`) reads an Inspect `.eval` or
  `.json` log (version 1 or 2; zstd, deflate or stored members) into a handover directory (see
  `shared.interop.handover`) that `evalfleet run -f` uploads with no model call.

Both stream, one sample in memory at a time; what grows with the sample count (ids, summaries,
a zip's central directory when writing) is spooled to temporary files. `format` holds what both
directions know of the format: names, ids, versions and JSON conventions."""

from shared.interop.inspect.importer import import_inspect_log
from shared.interop.inspect.writer import convert_to_inspect

__all__ = ["convert_to_inspect", "import_inspect_log"]
