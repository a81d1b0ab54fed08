"""The study: a parameter file, the notebooks run in order, the HTML report, and the analyses
behind its tables. The notebooks call it in a few lines::

    from cxrkit.study import analysis as A, plots as P
    from cxrkit import study as S
    cfg = S.load_study(params_file)
    out = S.Outputs(cfg, "05_ablation")
    abl = S.ablation(cfg)

Everything a notebook needs is importable from here; the modules are:

* :mod:`~cxrkit.study.config` -- the parameters (:class:`StudyConfig`, :func:`load_study`).
* :mod:`~cxrkit.study.data` -- the phantom and folds prepared, the dataset table, labels, patients.
* :mod:`~cxrkit.study.runs` -- the training runs: missing ones, saved predictions and couplings.
* :mod:`~cxrkit.study.inference` -- a variant's runs applied to new images (:func:`infer`).
* :mod:`~cxrkit.study.steps`, :mod:`~cxrkit.study.runner` -- the steps, run with papermill;
  :mod:`~cxrkit.study.terminal` -- what the terminal shows meanwhile (progress, the kernels' stderr
  without their routine noise); :mod:`~cxrkit.study.display` -- how the notebooks show numbers.
* :mod:`~cxrkit.study.cluster`, :mod:`~cxrkit.study.jobs` -- the training notebooks on a cluster
  (``--executor``, the ``cluster:`` block) as submitit jobs; :mod:`~cxrkit.study.tracking` -- the
  study's own run in the experiment tracker.
* :mod:`~cxrkit.study.outputs` -- what a notebook writes into the report (:class:`Outputs`).
* :mod:`~cxrkit.study.report`, :mod:`~cxrkit.study.findings` -- the HTML pages, opening with the
  findings, whose numbers :mod:`~cxrkit.study.findings_tables` reads from the steps' tables.
* :mod:`~cxrkit.study.comparison`, :mod:`~cxrkit.study.coupling`, :mod:`~cxrkit.study.headroom`,
  :mod:`~cxrkit.study.cooccurrence`, :mod:`~cxrkit.study.oracle` -- the analyses behind the tables;
  :mod:`~cxrkit.study.seeds` -- training-seed replicates of the comparisons.
* :mod:`~cxrkit.study.trust`, :mod:`~cxrkit.study.subgroups` -- how far to trust a model
  (``08_trust``): calibration, operating points, subgroups; figures in :mod:`~cxrkit.study.trust_plots`.
* :mod:`~cxrkit.study.external`, :mod:`~cxrkit.study.external_analysis` -- external validation
  (``07_external``): every variant's fold ensemble at the study's ``external:`` site against the
  internal test split; figures in :mod:`~cxrkit.study.external_plots`; its cached predictions
  (also read by ``08_trust``) in :mod:`~cxrkit.study.external_cache`.
* :mod:`~cxrkit.study.saliency` -- Grad-CAM of each variant scored against the true regions
  (``09_saliency``); figures in :mod:`~cxrkit.study.saliency_plots`.
* :mod:`~cxrkit.study.analysis`, :mod:`~cxrkit.study.plots`, :mod:`~cxrkit.study.literature` --
  computations on tables and arrays, figures and the literature rows of Table I.

A public name means one thing: an analysis exported here takes the study (``cfg``), and the
computation on arrays it uses and the figure of its result have names of their own
(``S.lambda_sweep(cfg)`` is the table, ``P.lambda_sweep_figure(table)`` its figure;
``S.coupling_recovery(cfg)`` scores each fold with ``A.recovery_scores(learned, true)``).
"""

from cxrkit.phantom.files import phantom_tables, split_groups
from cxrkit.study.comparison import ablation, comparisons, final_test_table, our_table_i_rows
from cxrkit.study.config import PHANTOM_KEYS, StudyConfig, StudyError, load_study
from cxrkit.study.cooccurrence import gain_vs_cooccurrence, training_conditional
from cxrkit.study.coupling import (
    best_recovery,
    column_share,
    column_shares,
    coupling_recovery,
    lambda_sweep,
)
from cxrkit.study.data import (
    data_fingerprint,
    dataset_table,
    external_dataset,
    external_fingerprint,
    is_phantom,
    load_dataset,
    patient_ids,
    prepare,
    split_leakage,
    true_labels,
)
from cxrkit.study.display import notebook_display
from cxrkit.study.external import external_folder, external_predictions, external_validation
from cxrkit.study.headroom import stacked_scores, stacking_headroom
from cxrkit.study.inference import infer, variant_runs
from cxrkit.study.oracle import oracle_table, true_coupling
from cxrkit.study.outputs import HEADLINES, MANIFEST, Outputs, forget_step, step_outputs
from cxrkit.study.report import write_index, write_reports_index
from cxrkit.study.runner import KERNEL_NAME, auto_jobs, ensure_kernel, run_study
from cxrkit.study.runs import (
    coupled_variants,
    fold_couplings,
    fold_predictions,
    main_variant,
    missing_runs,
    require_runs,
)
from cxrkit.study.saliency import run_saliency, saliency_tables, true_regions
from cxrkit.study.seeds import seed_ensembles, seed_replicates
from cxrkit.study.steps import NOTEBOOKS, Step, plan
from cxrkit.study.subgroups import (
    confounder_headline,
    subgroup_analysis,
    subgroup_attributes,
    subgroup_operating_points,
    view_confounder,
    view_shift,
)
from cxrkit.study.trust import (
    calibration,
    ensemble_predictions,
    oof_predictions,
    operating_point_headline,
    operating_points,
    oracle_predictions,
)

notebook_display()  # a notebook shows its tables rounded (4 significant digits); the CSVs keep every digit

__all__ = [
    "seed_ensembles",
    "seed_replicates",
    "HEADLINES",
    "KERNEL_NAME",
    "MANIFEST",
    "NOTEBOOKS",
    "PHANTOM_KEYS",
    "Outputs",
    "Step",
    "StudyConfig",
    "StudyError",
    "ablation",
    "auto_jobs",
    "best_recovery",
    "calibration",
    "column_share",
    "column_shares",
    "comparisons",
    "confounder_headline",
    "coupled_variants",
    "coupling_recovery",
    "data_fingerprint",
    "dataset_table",
    "ensemble_predictions",
    "ensure_kernel",
    "external_dataset",
    "external_fingerprint",
    "external_folder",
    "external_predictions",
    "external_validation",
    "final_test_table",
    "fold_couplings",
    "fold_predictions",
    "forget_step",
    "gain_vs_cooccurrence",
    "infer",
    "is_phantom",
    "lambda_sweep",
    "load_dataset",
    "load_study",
    "main_variant",
    "missing_runs",
    "oof_predictions",
    "operating_point_headline",
    "operating_points",
    "oracle_predictions",
    "oracle_table",
    "our_table_i_rows",
    "patient_ids",
    "phantom_tables",
    "plan",
    "prepare",
    "require_runs",
    "run_saliency",
    "run_study",
    "saliency_tables",
    "split_groups",
    "split_leakage",
    "stacked_scores",
    "stacking_headroom",
    "step_outputs",
    "subgroup_analysis",
    "subgroup_attributes",
    "subgroup_operating_points",
    "training_conditional",
    "true_coupling",
    "true_labels",
    "true_regions",
    "variant_runs",
    "view_confounder",
    "view_shift",
    "write_index",
    "write_reports_index",
]
