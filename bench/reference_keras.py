"""The published Keras LSTM autoencoder, as printed, for the speed ratios of `python -m bench`.

    model = Sequential()
    model.add(LSTM(64, input_shape=(T, n_features)))
    model.add(RepeatVector(T))
    model.add(LSTM(32, return_sequences=True))
    model.add(TimeDistributed(Dense(n_features)))
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, X, epochs=..., batch_size=64, validation_data=...)
    model.predict(X)

Nothing is changed: Keras' defaults for everything not printed (Adam's learning rate 1e-3,
`predict`'s batch of 32, tanh/sigmoid activations, Glorot/orthogonal initialisation).
TensorFlow is an optional extra (`pip install -e '.[reference]'`); the harness runs this file in
its own process (`python bench/reference_keras.py windows.npz out.json`) with an interpreter that
has TensorFlow, and gives it the very windows deepids is measured on.

Input (.npz): `train` and `val`, float32 arrays (n, T, F) of windows; `infer` likewise.
Output (JSON): per-epoch wall seconds and validation loss, training windows/s, predict windows/s.
"""

from __future__ import annotations

import json
import os
import sys
import time


def build_model(T: int, n_features: int):
    from tensorflow.keras.layers import LSTM, Dense, Input, RepeatVector, TimeDistributed
    from tensorflow.keras.models import Sequential

    model = Sequential()
    model.add(Input(shape=(T, n_features)))          # Keras 3 spelling of input_shape=(T, n_features)
    model.add(LSTM(64))
    model.add(RepeatVector(T))
    model.add(LSTM(32, return_sequences=True))
    model.add(TimeDistributed(Dense(n_features)))
    model.compile(optimizer="adam", loss="mse")
    return model


def run(windows_path: str, out_path: str, epochs: int, repeats: int, seed: int = 0) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    data = np.load(windows_path)
    train, val, infer = data["train"], data["val"], data["infer"]
    T, F = train.shape[1], train.shape[2]
    model = build_model(T, F)

    class EpochClock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):   # after the epoch's validation pass, as in deepids
            seconds.append(time.perf_counter() - self.t0)
            val_loss.append(float(logs["val_loss"]))

    seconds: list[float] = []
    val_loss: list[float] = []
    model.fit(train, train, epochs=epochs, batch_size=64, validation_data=(val, val), shuffle=True,
              callbacks=[EpochClock()], verbose=0)

    model.predict(infer[:256], verbose=0)            # build the predict function before timing
    predict_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(infer, verbose=0)              # the printed call: Keras' default batch of 32
        predict_s.append(time.perf_counter() - t0)
    predict_large_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(infer, batch_size=4096, verbose=0)
        predict_large_s.append(time.perf_counter() - t0)
    result = {
        "tensorflow": tf.__version__, "keras": tf.keras.__version__ if hasattr(tf.keras, "__version__") else None,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "train_windows": int(len(train)), "val_windows": int(len(val)), "infer_windows": int(len(infer)),
        "epoch_seconds": seconds, "val_loss": val_loss,
        "train_windows_per_s_best": len(train) / min(seconds), "train_windows_per_s_median": len(train) / sorted(seconds)[len(seconds) // 2],
        "predict_windows_per_s_best": len(infer) / min(predict_s),
        "predict_windows_per_s_median": len(infer) / sorted(predict_s)[len(predict_s) // 2],
        "predict_batch4096_windows_per_s_best": len(infer) / min(predict_large_s),
        "loadavg_end": os.getloadavg(),
    }
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit("usage: python bench/reference_keras.py WINDOWS.npz OUT.json [EPOCHS] [REPEATS]")
    run(args[0], args[1], int(args[2]) if len(args) > 2 else 3, int(args[3]) if len(args) > 3 else 3)
