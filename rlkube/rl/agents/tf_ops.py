"""TensorFlow's side of the networks' ops (see rlkube.rl.networks.NumpyOps), used inside the learner's graph."""

import tensorflow as tf


class TFOps:
    conv2d = staticmethod(lambda x, kernel, stride: tf.nn.conv2d(x, kernel, stride, "VALID"))
    relu = staticmethod(tf.nn.relu)
    tanh = staticmethod(tf.tanh)
    exp = staticmethod(tf.exp)
    mean = staticmethod(lambda x, axis: tf.reduce_mean(x, axis=axis, keepdims=True))
    sign = staticmethod(tf.sign)
    sqrt = staticmethod(tf.sqrt)
    log = staticmethod(tf.math.log)
    abs = staticmethod(tf.abs)
    matmul = staticmethod(tf.matmul)
    stop_gradient = staticmethod(tf.stop_gradient)
    float32 = staticmethod(lambda x: tf.cast(x, tf.float32))
    cast = staticmethod(tf.cast)
    flatten = staticmethod(lambda x: tf.reshape(x, (tf.shape(x)[0], -1)))
    concat = staticmethod(lambda xs: tf.concat(xs, axis=-1))
    stack = staticmethod(tf.stack)
    split = staticmethod(tf.split)
    reshape = staticmethod(tf.reshape)
    clip = staticmethod(tf.clip_by_value)
    softplus = staticmethod(tf.nn.softplus)
    sum = staticmethod(lambda x: tf.reduce_sum(x, axis=-1))
    take = staticmethod(lambda x, indices: tf.gather(x, indices, batch_dims=1))
    log_softmax = staticmethod(tf.nn.log_softmax)
