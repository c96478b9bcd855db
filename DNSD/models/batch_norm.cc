// DNSD's CPU batch norm (run.cpu_numerics onednn) on float32 activations, optionally followed by a ReLU; each of its
// input and output is NCHW or oneDNN's AVX2 layout nChw8c (blocks of eight channels, the channel innermost), so that
// between DNSD's convolutions no activation is reordered. Its bits are the same on every x86-64 CPU, at any thread
// count and in either layout: a channel's sums are taken by one thread, in float64, in one order; the square root is
// IEEE's (exact), and the build contracts no product and sum into a fused multiply-add (-ffp-contract=off).
#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

namespace {

constexpr int kLanes = 8;  // the sums' pixel lanes
constexpr int kBlock = 8;  // channels per block of nChw8c

// Where element (image, channel, pixel) lies in NCHW, or in nChw8c; channel + k lies k strides further, for the k
// that keep it in channel's block.
template <bool kBlocked>
struct Layout {
  int64_t channels, pixels;
  int64_t at(int64_t image, int64_t channel, int64_t pixel) const {
    if (kBlocked)
      return ((image * (channels / kBlock) + channel / kBlock) * pixels + pixel) * kBlock + channel % kBlock;
    return (image * channels + channel) * pixels + pixel;
  }
  int64_t stride() const { return kBlocked ? 1 : pixels; }
};

struct Shape {
  int64_t images, channels, pixels;
  explicit Shape(const paddle::Tensor& x)
      : images(x.shape()[0]), channels(x.shape()[1]), pixels(x.shape()[2] * x.shape()[3]) {}
  double count() const { return double(images * pixels); }
};

// For each channel first + k, k < kWidth: the sums of one(i, k) and two(i, k) over its elements i, in float64, in the
// same order in either layout: image by image, pixel by pixel into eight lanes (the pixel's index modulo eight),
// which are added last, in order.
template <int kWidth, typename L, typename One, typename Two>
void channel_sums(const Shape& shape, const L& layout, int64_t first, One one, Two two, double* ones, double* twos) {
  double lanes[2][kLanes][kWidth] = {};
  for (int64_t image = 0; image < shape.images; ++image) {
    int64_t pixel = 0;
    for (; pixel + kLanes <= shape.pixels; pixel += kLanes)
      for (int lane = 0; lane < kLanes; ++lane)
        for (int k = 0; k < kWidth; ++k) {
          int64_t i = layout.at(image, first, pixel + lane) + k * layout.stride();
          lanes[0][lane][k] += one(i, k);
          lanes[1][lane][k] += two(i, k);
        }
    for (; pixel < shape.pixels; ++pixel)
      for (int k = 0; k < kWidth; ++k) {
        int64_t i = layout.at(image, first, pixel) + k * layout.stride();
        lanes[0][pixel % kLanes][k] += one(i, k);
        lanes[1][pixel % kLanes][k] += two(i, k);
      }
  }
  for (int k = 0; k < kWidth; ++k) {
    ones[k] = twos[k] = 0;
    for (int lane = 0; lane < kLanes; ++lane) {
      ones[k] += lanes[0][lane][k];
      twos[k] += lanes[1][lane][k];
    }
  }
}

// Calls visit(input position, output position, k) for every element of channels first + k, k < kWidth.
template <int kWidth, typename In, typename Out, typename Visit>
void each(const Shape& shape, const In& in, const Out& out, int64_t first, Visit visit) {
  for (int64_t image = 0; image < shape.images; ++image)
    for (int64_t pixel = 0; pixel < shape.pixels; ++pixel) {
      int64_t i = in.at(image, first, pixel), o = out.at(image, first, pixel);
      for (int k = 0; k < kWidth; ++k) visit(i + k * in.stride(), o + k * out.stride(), k);
    }
}

struct Arguments {
  const float *x, *gamma, *beta, *running_mean, *running_variance, *y, *dy;
  float *out, *dx, *dgamma, *dbeta;
  double *mean, *variance;
  bool training, relu;
  float epsilon;
  int threads;
};

template <bool kBlockedIn, bool kBlockedOut>
void forward(const Shape& shape, const Arguments& a) {
  constexpr int kWidth = kBlockedIn ? kBlock : 1;  // the channels one thread takes together
  Layout<kBlockedIn> in{shape.channels, shape.pixels};
  Layout<kBlockedOut> out{shape.channels, shape.pixels};
#pragma omp parallel for num_threads(a.threads) schedule(static)
  for (int64_t first = 0; first < shape.channels; first += kWidth) {
    double* mean = a.mean + first;
    double* variance = a.variance + first;
    const float* x = a.x;
    float* result = a.out;  // copies of the pointers, which a store through result cannot change: loops vectorise
    if (a.training) {
      // A float32's square is exact in float64, whose 53 bits keep the sum of squares minus the squared sum exact
      // enough for any activation whose mean is not thousands of times its spread.
      channel_sums<kWidth>(shape, in, first, [=](int64_t i, int) { return double(x[i]); },
                           [=](int64_t i, int) { return double(x[i]) * x[i]; }, mean, variance);
      for (int k = 0; k < kWidth; ++k) {
        mean[k] /= shape.count();
        variance[k] = std::max(variance[k] / shape.count() - mean[k] * mean[k], 0.0);
      }
    } else {
      std::copy(a.running_mean + first, a.running_mean + first + kWidth, mean);
      std::copy(a.running_variance + first, a.running_variance + first + kWidth, variance);
    }
    float centre[kWidth], scale[kWidth], shift[kWidth];
    for (int k = 0; k < kWidth; ++k) {
      centre[k] = float(mean[k]);
      scale[k] = float(a.gamma[first + k] / std::sqrt(variance[k] + a.epsilon));
      shift[k] = a.beta[first + k];
    }
    bool relu = a.relu;
    each<kWidth>(shape, in, out, first, [&](int64_t i, int64_t o, int k) {
      float y = (x[i] - centre[k]) * scale[k] + shift[k];
      result[o] = relu && y < 0 ? 0.0f : y;
    });
  }
}

// dy and y are in the output's layout, x and dx in the input's.
template <bool kBlockedIn, bool kBlockedOut>
void backward(const Shape& shape, const Arguments& a) {
  constexpr int kWidth = kBlockedIn ? kBlock : 1;
  Layout<kBlockedIn> in{shape.channels, shape.pixels};
  Layout<kBlockedOut> out{shape.channels, shape.pixels};
#pragma omp parallel for num_threads(a.threads) schedule(static)
  for (int64_t first = 0; first < shape.channels; first += kWidth) {
    // The gradient reaching the batch norm's output (none where the ReLU cut it), first into dx.
    const float *x = a.x, *y = a.y, *dy = a.dy;
    float* dx = a.dx;  // copies of the pointers, which a store through dx cannot change: the loops vectorise
    if (a.relu)
      each<kWidth>(shape, in, out, first, [=](int64_t i, int64_t o, int) { dx[i] = y[o] > 0 ? dy[o] : 0.0f; });
    else
      each<kWidth>(shape, in, out, first, [=](int64_t i, int64_t o, int) { dx[i] = dy[o]; });
    const double* mean = a.mean + first;
    double inverse[kWidth], sum[kWidth], dot[kWidth];
    for (int k = 0; k < kWidth; ++k) inverse[k] = 1.0 / std::sqrt(a.variance[first + k] + a.epsilon);
    channel_sums<kWidth>(shape, in, first, [=](int64_t i, int) { return double(dx[i]); },
                         [=](int64_t i, int k) { return double(dx[i]) * (x[i] - mean[k]); }, sum, dot);
    // dx = scale * (g - sum / n) - slope * (x - mean): the batch's statistics depend on x in training only.
    float scale[kWidth], offset[kWidth], slope[kWidth], centre[kWidth];
    for (int k = 0; k < kWidth; ++k) {
      a.dbeta[first + k] = float(sum[k]);
      a.dgamma[first + k] = float(dot[k] * inverse[k]);
      double exact = a.gamma[first + k] * inverse[k];
      scale[k] = float(exact);
      offset[k] = a.training ? float(-exact * sum[k] / shape.count()) : 0.0f;
      slope[k] = a.training ? float(exact * inverse[k] * inverse[k] * dot[k] / shape.count()) : 0.0f;
      centre[k] = float(mean[k]);
    }
    each<kWidth>(shape, in, in, first, [&](int64_t i, int64_t, int k) {
      dx[i] = (dx[i] * scale[k] + offset[k]) - (x[i] - centre[k]) * slope[k];
    });
  }
}

// The kernel for the layouts asked for.
template <template <bool, bool> class Kernel>
void run(const Shape& shape, const Arguments& arguments, bool blocked_in, bool blocked_out) {
  PD_CHECK(shape.channels % kBlock == 0 || !(blocked_in || blocked_out), "nChw8c holds channels in eights");
  if (blocked_in && blocked_out) Kernel<true, true>::run(shape, arguments);
  else if (blocked_in) Kernel<true, false>::run(shape, arguments);
  else if (blocked_out) Kernel<false, true>::run(shape, arguments);
  else Kernel<false, false>::run(shape, arguments);
}

template <bool kIn, bool kOut>
struct Forward {
  static void run(const Shape& shape, const Arguments& arguments) { forward<kIn, kOut>(shape, arguments); }
};

template <bool kIn, bool kOut>
struct Backward {
  static void run(const Shape& shape, const Arguments& arguments) { backward<kIn, kOut>(shape, arguments); }
};

}  // namespace

// Out, and the mean and biased variance it normalised with (the batch's in training, else the running ones).
std::vector<paddle::Tensor> BatchNormForward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                             const paddle::Tensor& beta, const paddle::Tensor& running_mean,
                                             const paddle::Tensor& running_variance, bool training, float epsilon,
                                             bool relu, bool blocked_in, bool blocked_out, int threads) {
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 4, "DNSD's batch norm takes float32 images");
  Shape shape(x);
  auto out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto mean = paddle::empty({shape.channels}, paddle::DataType::FLOAT64, x.place());
  auto variance = paddle::empty({shape.channels}, paddle::DataType::FLOAT64, x.place());
  Arguments arguments{x.data<float>(), gamma.data<float>(), beta.data<float>(), running_mean.data<float>(),
                      running_variance.data<float>(), nullptr, nullptr, out.data<float>(), nullptr, nullptr, nullptr,
                      mean.data<double>(), variance.data<double>(), training, relu, epsilon, threads};
  run<Forward>(shape, arguments, blocked_in, blocked_out);
  return {out, mean, variance};
}

std::vector<paddle::Tensor> BatchNormBackward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                              const paddle::Tensor& mean, const paddle::Tensor& variance,
                                              const paddle::Tensor& out, const paddle::Tensor& grad_out,
                                              bool training, float epsilon, bool relu, bool blocked_in,
                                              bool blocked_out, int threads) {
  Shape shape(x);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto dgamma = paddle::empty(gamma.shape(), paddle::DataType::FLOAT32, x.place());
  auto dbeta = paddle::empty(gamma.shape(), paddle::DataType::FLOAT32, x.place());
  Arguments arguments{x.data<float>(), gamma.data<float>(), nullptr, nullptr, nullptr, out.data<float>(),
                      grad_out.data<float>(), nullptr, dx.data<float>(), dgamma.data<float>(), dbeta.data<float>(),
                      const_cast<double*>(mean.data<double>()), const_cast<double*>(variance.data<double>()),
                      training, relu, epsilon, threads};
  run<Backward>(shape, arguments, blocked_in, blocked_out);
  return {dx, dgamma, dbeta};
}

PD_BUILD_OP(dnsd_batch_norm)
    .Inputs({"X", "Gamma", "Beta", "RunningMean", "RunningVariance"})
    .Outputs({"Out", "Mean", "Variance"})
    .Attrs({"training: bool", "epsilon: float", "relu: bool", "blocked_in: bool", "blocked_out: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormForward));

PD_BUILD_GRAD_OP(dnsd_batch_norm)
    .Inputs({"X", "Gamma", "Mean", "Variance", "Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"training: bool", "epsilon: float", "relu: bool", "blocked_in: bool", "blocked_out: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(BatchNormBackward));
