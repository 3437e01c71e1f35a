"""Weight files: our own checkpoints, every foreign VGG format, and published weights as records.

The modules, in import order (each imports only those above it):

- ``ours``: our checkpoint, a safetensors file in torchvision's layout (``features.<i>``,
  ``classifier.0/3/6``) with the model's metadata (architecture, classes, normalisation) under the
  key ``vgg``; written atomically, read without unpickling anything.
- ``keras``: Keras applications' HDF5 files (kernels (height, width, in, out), fc1 reading a
  height-width-channel flattened map, BGR input), one explicit, checked mapping.
- ``foreign``: torchvision and timm state dicts, each by one explicit, checked mapping; any local
  file's format told by its contents, with its source's preprocessing (Sec. 2 / SPEC section 6).
- ``hub``: published weights as records (:class:`PublishedWeights`, :data:`PUBLISHED`: URL,
  SHA-256, architecture, preprocessing, classes, reported accuracy), the download cache, and
  :func:`load_any`, which takes any of the above.
"""

from .foreign import (
    HDF5_MAGIC,
    SOURCES,
    TIMM_TO_VGG,
    TORCHVISION_KEY,
    infer_architecture,
    load_weight_file,
    model_from_state,
    plain_state,
    read_weight_file,
    state_format,
    timm_state,
    torchvision_state,
)
from .hub import (
    CLASS_LISTS,
    HASH_IN_NAME,
    PUBLISHED,
    TORCHVISION_URL,
    PublishedWeights,
    cached_download,
    class_list,
    imagenet_classes,
    load_any,
    local_record,
    published,
    resolve_spec,
)
from .keras import (
    KERAS_CONV,
    KERAS_DENSE,
    keras_architecture,
    keras_layers,
    keras_model,
    keras_state,
    read_keras,
)
from .ours import (
    BEST,
    LAST,
    METADATA_KEY,
    load_model,
    load_state,
    model_from_metadata,
    read_metadata,
    resolve_checkpoint,
    save_model,
    torch_load_safe,
)

__all__ = [
    "BEST", "CLASS_LISTS", "HASH_IN_NAME", "HDF5_MAGIC", "KERAS_CONV", "KERAS_DENSE", "LAST",
    "METADATA_KEY", "PUBLISHED", "PublishedWeights", "SOURCES", "TIMM_TO_VGG", "TORCHVISION_KEY",
    "TORCHVISION_URL", "cached_download", "class_list", "imagenet_classes", "infer_architecture",
    "keras_architecture", "keras_layers", "keras_model", "keras_state", "load_any", "load_model",
    "load_state", "load_weight_file", "local_record", "model_from_metadata", "model_from_state",
    "plain_state", "published", "read_keras", "read_metadata", "read_weight_file", "resolve_checkpoint",
    "resolve_spec", "save_model", "state_format", "timm_state", "torch_load_safe", "torchvision_state",
]
