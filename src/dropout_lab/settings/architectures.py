"""The model kinds, described without torch: their settings, dropout slots and layer shapes.

A model kind (model=NAME, config/model/NAME.yaml) is an `Architecture` registered here
by name. It names the model.* settings it reads and checks their values, lists its
dropout slots and the layers each acts on, and gives the shapes of its weight layers.
A run's validation and the workflow's plan (sizes, FLOPs, the memory a run needs)
read it without torch; the kind's torch network (dropout_lab.training.models) builds
its layers from the same shapes and says how the pack engine stacks it, so a shape
is computed in one place only.

A new kind is an Architecture subclass here, its network in training/models.py, its
YAML in config/model/ and its sizes in config/scale/*.yaml; a setting or a dropout
slot that no kind had before is also a field of ModelConfig/ModelScale or
DropoutConfig (dropout_lab.settings.config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from dropout_lab.settings.checks import fail, is_list, positive_int
from dropout_lab.settings.datasets import SPECS

Conv = tuple[int, int, int, int]  # a conv layer: (in channels, out channels, kernel, image side)
Dense = tuple[int, int]  # a fully connected layer: (in features, out features)

INPUT = "input"  # every kind's first dropout slot: the pixels, one rate
COMMON = ("name", "max_norm")  # model.* settings of every kind


@dataclass(frozen=True)
class LayerGroup:
    """The layers one dropout slot acts on (dropout.<slot>: one rate for all of them, or one each)."""

    slot: str
    layer: str  # one such layer, as a message names it: "hidden layer"
    count: str  # the model setting that says how many there are (a list setting: one per entry)


class Architecture:
    """One model kind: its settings, its dropout slots in forward order and its layer shapes."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # the model.* settings it reads, besides COMMON
    groups: ClassVar[tuple[LayerGroup, ...]]  # its dropout slots after the input one, in forward order
    width_field: ClassVar[str]  # the setting to lower when one run's weights do not fit in memory

    @property
    def slots(self) -> tuple[str, ...]:
        return (INPUT, *(group.slot for group in self.groups))

    @staticmethod
    def layer_count(model: Mapping[str, Any], group: LayerGroup) -> int:
        """How many layers `group` has in a model with these settings."""
        value = model[group.count]
        return len(value) if is_list(value) else int(value)

    def check_settings(self, model: Mapping[str, Any]) -> None:
        """Its own settings are set and valid, and no other kind's setting is."""
        for key in model.keys():
            if key not in (*COMMON, *self.fields) and model[key] is not None:
                fail(f"model.{key} does not apply to model={self.name}; it sets {', '.join(self.fields)}")
        for key in self.fields:
            if model[key] is None:
                kinds = " or ".join(f"model={name}" for name in ARCHITECTURES)
                fail(f"model.{key} is not set for model={self.name}; pick {kinds} from config/model/")
        self.check_values(model)

    def check_values(self, model: Mapping[str, Any]) -> None:
        """The values of its own settings (all set); one line naming the first bad one."""
        raise NotImplementedError

    def check_weight_gate(self, gate: str, rates: Any) -> None:
        """A gate that masks the weights of the fully connected layer reading its slot can drop at these rates
        (`rates`: dropout_lab.settings.config.Rates); here every slot is read by a fully connected layer."""

    def layer_shapes(self, model: Mapping[str, Any], image: tuple[int, int], classes: int
                     ) -> tuple[list[Conv], list[Dense]]:
        """Its conv and fully connected layers, in forward order, for square images of (channels, side)
        (a flat input of n features is (n, 1))."""
        raise NotImplementedError

    def describe(self, model: Mapping[str, Any]) -> str:
        """Its size in a few characters, for the plan: 2x1024."""
        raise NotImplementedError


ARCHITECTURES: dict[str, Architecture] = {}  # model=NAME -> its architecture, in registration order


def register(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: make a model kind available as model=NAME."""
    if cls.name in ARCHITECTURES and type(ARCHITECTURES[cls.name]) is not cls:
        raise ValueError(f"model {cls.name!r} is registered twice")
    ARCHITECTURES[cls.name] = cls()
    return cls


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        fail(f"model={name!r} is unknown; choose one of {list(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def _dense(fan_in: int, widths: list[int], classes: int) -> list[Dense]:
    sizes = [fan_in, *widths, classes]
    return list(zip(sizes, sizes[1:]))


@register
class MLPArchitecture(Architecture):
    """in -> depth x width (ReLU) -> classes; dropout on the input and after each hidden layer (its ReLU)."""

    name = "mlp"
    fields = ("depth", "width")
    groups = (LayerGroup("hidden", "hidden layer", "depth"),)
    width_field = "width"

    def check_values(self, model: Mapping[str, Any]) -> None:
        positive_int("model.depth", model["depth"], minimum=0)
        positive_int("model.width", model["width"])

    def layer_shapes(self, model: Mapping[str, Any], image: tuple[int, int], classes: int
                     ) -> tuple[list[Conv], list[Dense]]:
        channels, side = image
        return [], _dense(channels * side * side, [model["width"]] * model["depth"], classes)

    def describe(self, model: Mapping[str, Any]) -> str:
        return f"{model['depth']}x{model['width']}"


@register
class CNNArchitecture(Architecture):
    """len(channels) x [conv k x k, ReLU, 2x2 max-pool] -> fc_depth x fc_width (ReLU) -> classes; dropout on the
    input, after each conv block (its pooling) and after each fully connected hidden layer (Srivastava et al.
    2014, Table 4)."""

    name = "cnn"
    fields = ("channels", "kernel_size", "fc_depth", "fc_width")
    groups = (LayerGroup("conv", "conv block", "channels"), LayerGroup("fc", "fully connected hidden layer", "fc_depth"))
    width_field = "fc_width"

    def check_values(self, model: Mapping[str, Any]) -> None:
        if not is_list(model["channels"]):
            fail(f"model.channels={model['channels']!r} must be a list with one width per conv block, e.g. [32,64,128]")
        if len(model["channels"]) == 0:
            fail("model.channels is empty; give one width per conv block, e.g. [32,64,128]")
        for i, c in enumerate(model["channels"]):
            positive_int(f"model.channels[{i}]", c)
        k = positive_int("model.kernel_size", model["kernel_size"])
        if k % 2 == 0:
            fail(f"model.kernel_size={k} must be odd so 'same' padding keeps the image size, e.g. 3 or 5")
        positive_int("model.fc_depth", model["fc_depth"], minimum=0)
        positive_int("model.fc_width", model["fc_width"])

    def check_weight_gate(self, gate: str, rates: Any) -> None:
        if any([rates.input, *rates.conv[:-1]]):  # the last conv block's slot is read by the first fc layer
            fail(f"gate={gate} masks fully connected weights, but dropout.input/dropout.conv put it before a "
                 "convolution; set them to 0 there (only dropout.fc and the last conv block's rate apply)")

    def layer_shapes(self, model: Mapping[str, Any], image: tuple[int, int], classes: int
                     ) -> tuple[list[Conv], list[Dense]]:
        c_in, side = image
        convs = []
        for c_out in model["channels"]:
            convs.append((c_in, c_out, model["kernel_size"], side))
            c_in, side = c_out, side // 2  # each block ends with a 2x2 max-pool
        return convs, _dense(c_in * side * side, [model["fc_width"]] * model["fc_depth"], classes)

    def describe(self, model: Mapping[str, Any]) -> str:
        return f"{'-'.join(map(str, model['channels']))} conv + {model['fc_depth']}x{model['fc_width']}"


def layer_shapes(model: Mapping[str, Any], dataset: str) -> tuple[list[Conv], list[Dense]]:
    """The layers of a model with these settings (a mapping with its name and size settings) on a dataset."""
    spec = SPECS[dataset]
    channels, side, _ = spec.image
    return architecture(model["name"]).layer_shapes(model, (channels, side), spec.classes)


def model_parameters(model: Mapping[str, Any], dataset: str) -> int:
    """How many weights the model has (to refuse a size that cannot fit before anything is allocated)."""
    convs, dense = layer_shapes(model, dataset)
    return sum(a * b * k * k + b for a, b, k, _ in convs) + sum(a * b + b for a, b in dense)


BYTES_PER_WEIGHT = 16  # weights, gradients and momenta in float32, and a bf16 or scratch copy


def memory_bytes() -> int:
    """This machine's physical memory (the most a run's weights could use)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def parameter_count(model: Mapping[str, Any], dataset: str) -> int:
    """model_parameters without listing every layer: each layer-count setting (depth) adds equal layers, so the
    count is that of two such layers plus the layers beyond them (a depth of 10**9 is counted, not built)."""
    kind = architecture(model["name"])
    counts = [g.count for g in kind.groups if isinstance(model.get(g.count), int) and model[g.count] > 2]
    two = {**model, **{count: 2 for count in counts}}
    total = base = model_parameters(two, dataset)
    for count in counts:
        total += (model[count] - 2) * (base - model_parameters({**two, count: 1}, dataset))
    return total


def check_size(model: Mapping[str, Any], scale: Mapping[str, Any], dataset: str) -> None:
    """A model too large for this machine's memory is refused before anything is built, naming the size setting to
    lower: of those set otherwise than the scale (`scale`: the scale's settings of this kind), the one whose scale
    value needs least."""
    kind = ARCHITECTURES.get(model.get("name"))
    if kind is None:
        return
    try:
        need, have = parameter_count(model, dataset) * BYTES_PER_WEIGHT, memory_bytes()
    except (TypeError, KeyError):
        return  # a size that is not a whole number: the settings' own checks name it
    if need <= have:
        return
    changed = [key for key in kind.fields if isinstance(scale.get(key), (int, list)) and model[key] != scale[key]]
    key = min(changed, key=lambda k: parameter_count({**model, k: scale[k]}, dataset), default=kind.width_field)
    hint = f" (the scale's is {scale[key]})" if scale.get(key) is not None else ""
    fail(f"model.{key}={model[key]} makes the model too large: about {need / 2**30:,.0f} GiB for the weights, "
         f"gradients and momenta of one run, and this machine has {have / 2**30:.0f} GiB; choose a smaller "
         f"model.{key}{hint}")

