"""The paper in one command (``vgg reproduce``): its experiments as a plan of ordinary ``vgg train``
and ``vgg evaluate`` runs, resumable step by step, and ``REPORT.md`` with the paper's tables beside ours.

- :mod:`.plan`: the steps as data (Sec. 3.1's chain of nets, Tables 3-6 and App. A's 8-9), sized by
  presets and flags (:class:`Options`);
- :mod:`.estimate`: the time of each step, from a few timed batches (``--plan``);
- :mod:`.pipeline`: the steps run in order under ``DIR/<step>/``, finished ones kept, an
  interrupted one resumed exactly;
- :mod:`.paper`: the paper's numbers; :mod:`.conclusions`: which of its findings hold on ours;
- :mod:`.report`: ``DIR/REPORT.md``; :mod:`.figures`: its pictures.
"""

from .estimate import estimate, plan_text
from .pipeline import PLAN_FILE, STEP_FILE, finished, run_plan
from .plan import NETS, PRESETS, TABLES, Options, Step, make_plan, parse_factor, preset_options
from .report import REPORT, write_report

__all__ = ["NETS", "PLAN_FILE", "PRESETS", "REPORT", "STEP_FILE", "TABLES", "Options", "Step", "estimate",
           "finished", "make_plan", "parse_factor", "plan_text", "preset_options", "run_plan", "write_report"]
