"""Create tests/golden/tiny_cnn.keras: a small CIFAR-10 CNN (about 30 k MACs per image) trained for a
few seconds, so sweep tests and the golden sweep run in seconds and still classify better than chance.

Run once, deliberately (it is committed): ``python tests/golden/make_tiny_model.py``. Re-running it
changes the model and therefore tests/golden/sweep_small*.csv (see tests/golden/README.md).
"""

from pathlib import Path

import keras
import numpy as np

import hwsim
from hwsim.sweep_exec import subset

OUT = Path(__file__).with_name("tiny_cnn.keras")


def main():
    keras.utils.set_random_seed(0)
    images, labels = hwsim.load_cifar10("train")
    idx = subset(len(labels), 20000)
    x, y = images[idx].astype("float32"), labels[idx]
    inp = keras.Input((32, 32, 3), name="pixels")
    h = keras.layers.Rescaling(1.0 / 255, name="rescale")(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(h)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    model = keras.Model(inp, out, name="tiny_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=4, shuffle=True, verbose=2)
    model.save(OUT)
    print("saved", OUT)


if __name__ == "__main__":
    main()
