"""Pretrained baselines that run offline, behind the interface of our trained embedding models.

    >>> from fr_lib.baselines import DlibResNetEmbedder     # needs: pip install 'fr_lib[dlib]'
    >>> model = DlibResNetEmbedder()                        # (B, 3, H, W) in [0, 1] -> (B, 128) unit vectors

Usually reached through ``fr_lib.embedders.resolve_embedder('dlib-resnet')``. Importing this package does not import
dlib; constructing the model does (ImportError with the install command when it is missing).
"""
from fr_lib.baselines.dlib_resnet import (INSTALL_HINT, DlibResNetEmbedder, PhotoFaces, dlib_available,
                                          import_dlib)

__all__ = ["DlibResNetEmbedder", "PhotoFaces", "dlib_available", "import_dlib", "INSTALL_HINT"]
