"""The phantom: a synthetic chest X-ray dataset from a known generative model, and its exact oracle.

* :mod:`~cxrkit.phantom.model` -- the label model's constants and probabilities.
* :mod:`~cxrkit.phantom.sampling` -- drawing the studies (labels, truth, metadata).
* :mod:`~cxrkit.phantom.render` -- drawing one radiograph (:mod:`~cxrkit.phantom.scene`,
  :mod:`~cxrkit.phantom.anatomy`, :mod:`~cxrkit.phantom.findings`).
* :mod:`~cxrkit.phantom.generate` -- writing a dataset in the Grand X-Ray Slam layout;
  :mod:`~cxrkit.phantom.formats` -- its image files as 8-bit PNG, 16-bit PNG or DICOM.
* :mod:`~cxrkit.phantom.posterior`, :mod:`~cxrkit.phantom.oracle` -- the exact posterior of the
  labels given what is drawn; oracle scores, AUCs and the true coupling.
* :mod:`~cxrkit.phantom.files` -- a phantom's tables read back, its config and site, and its images
  per split.
* :mod:`~cxrkit.phantom.site` -- the hospitals (``default``, ``site_b``): population, labeller and
  scanner (:mod:`~cxrkit.phantom.scanner`), for external validation.
"""
