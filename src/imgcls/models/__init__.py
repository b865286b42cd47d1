"""Networks for image classification: a registry of model builders, pretrained backbones, weights.

Importing this package registers the built-in models: the modules in `BUILTIN_MODULES` hold
`@register_model` entries and are imported here, not by the registry, which stays a leaf (they
import it). Python runs this file before any `imgcls.models.<module>`, so every import path into
the package sees a full registry. They need only torch; timm, torchvision and the Keras
networks are imported when a backbone is built.
"""

from imgcls.models import classic, cnn, transfer

BUILTIN_MODULES = (cnn, classic, transfer)  # each registers its models when imported
