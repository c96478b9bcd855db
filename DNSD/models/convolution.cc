// DNSD's CPU convolution (run.cpu_numerics onednn): oneDNN's forward, backward-data and backward-weights primitives
// on float32 activations (NCHW, or nChw8c between DNSD's operators) and the OIHW weights Paddle holds, each reordered
// where oneDNN chooses another layout.
// Forward and backward-data give each output element to one thread, so their bits do not depend on the thread count;
// backward-weights sums over the images, in parts of a fixed split (weight_gradient). oneDNN picks its kernels by
// the CPU's instruction sets: pinned to AVX2, every CPU that portable numerics serve runs the same ones.
#include <omp.h>

#include <algorithm>
#include <exception>
#include <map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

using dnnl::memory;
using tag = memory::format_tag;

namespace {

dnnl::engine& cpu() {
  static dnnl::engine engine = [] {
    try {
      dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx2);
    } catch (const dnnl::error&) {  // oneDNN already ran in this process: its instruction set is checked below
    }
    PD_CHECK(dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2,
             "DNSD's oneDNN convolution runs AVX2's kernels, and oneDNN runs another instruction set here");
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return engine;
}

struct Geometry {
  memory::dims src, weights, dst, strides, padding;

  Geometry(const paddle::Tensor& x, const paddle::Tensor& w, int64_t stride, int64_t pad) {
    auto xs = x.shape(), ws = w.shape();
    int64_t height = (xs[2] + 2 * pad - ws[2]) / stride + 1, width = (xs[3] + 2 * pad - ws[3]) / stride + 1;
    src = {xs[0], xs[1], xs[2], xs[3]};
    weights = {ws[0], ws[1], ws[2], ws[3]};
    dst = {xs[0], ws[0], height, width};
    strides = {stride, stride};
    padding = {pad, pad};
  }

  // The same convolution on a part of the images.
  Geometry on(int64_t images) const {
    Geometry part = *this;
    part.src[0] = part.dst[0] = images;
    return part;
  }

  memory::desc chosen(const memory::dims& dims) const { return {dims, memory::data_type::f32, tag::any}; }

  dnnl::convolution_forward::primitive_desc forward() const {
    return {cpu(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, chosen(src),
            chosen(weights), chosen(dst), strides, padding, padding};
  }
};

memory plain(const memory::dims& dims, tag layout, const float* data) {
  return {{dims, memory::data_type::f32, layout}, cpu(), const_cast<float*>(data)};
}

memory plain(const memory::dims& dims, tag layout, const paddle::Tensor& tensor) {
  return plain(dims, layout, tensor.data<float>());
}

// An activation's layout: NCHW, or nChw8c where DNSD's batch norm is on its other side (see batch_norm.cc).
tag activation(bool blocked) { return blocked ? tag::nChw8c : tag::nchw; }

// nChw8c of other channel counts would pad them, and the tensor Paddle holds would be too small.
void check_layouts(const Geometry& geometry, bool blocked_in, bool blocked_out) {
  PD_CHECK((!blocked_in || geometry.src[1] % 8 == 0) && (!blocked_out || geometry.dst[1] % 8 == 0),
           "nChw8c holds channels in eights");
}

// The tensor in the layout a primitive asks for: itself, or a reordered copy.
memory as(memory given, const memory::desc& wanted, dnnl::stream& stream) {
  if (given.get_desc() == wanted) return given;
  memory copy(wanted, cpu());
  dnnl::reorder(given, copy).execute(stream, given, copy);
  return copy;
}

// Runs a primitive writing into target through the layout it asks for.
template <typename Run>
void into(memory target, const memory::desc& wanted, dnnl::stream& stream, Run run) {
  memory result = target.get_desc() == wanted ? target : memory(wanted, cpu());
  run(result);
  if (result != target) dnnl::reorder(result, target).execute(stream, result, target);
}

// Backward-weights sums over the images, and oneDNN's split of them among threads would decide its bits. The images are
// split into a fixed number of parts instead: each part's sum runs on one thread (its primitive made for one thread,
// as oneDNN sizes a kernel's split when it makes it), and the parts' sums are added in order.
constexpr int64_t kParts = 8;

void weight_gradient(const Geometry& geometry, const float* x, const float* dout, bool blocked_in, bool blocked_out,
                     int threads, float* dw) {
  int64_t images = geometry.src[0], parts = std::min(kParts, images);
  int64_t image_in = memory::desc(geometry.src, memory::data_type::f32, tag::nchw).get_size() / sizeof(float) / images;
  int64_t image_out = memory::desc(geometry.dst, memory::data_type::f32, tag::nchw).get_size() / sizeof(float) / images;
  int64_t size = memory::desc(geometry.weights, memory::data_type::f32, tag::oihw).get_size() / sizeof(float);
  std::vector<std::vector<float>> sums(parts, std::vector<float>(size));
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // each thread its own
  omp_set_num_threads(1);
  std::map<int64_t, dnnl::convolution_backward_weights::primitive_desc> descs;  // by the part's images
  for (int64_t part = 0; part < parts; ++part) {
    int64_t count = (part + 1) * images / parts - part * images / parts;
    if (descs.count(count)) continue;
    Geometry piece = geometry.on(count);
    descs.emplace(count, dnnl::convolution_backward_weights::primitive_desc(
        cpu(), dnnl::algorithm::convolution_direct, piece.chosen(piece.src), piece.chosen(piece.weights),
        piece.chosen(piece.dst), piece.strides, piece.padding, piece.padding, piece.forward(), attributes));
  }
  std::exception_ptr failure;  // an exception may not leave a parallel region
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t part = 0; part < parts; ++part) try {
    int64_t first = part * images / parts, count = (part + 1) * images / parts - first;
    Geometry piece = geometry.on(count);
    const auto& desc = descs.at(count);
    dnnl::stream stream(cpu());
    auto src = as(plain(piece.src, activation(blocked_in), x + first * image_in), desc.src_desc(), stream);
    auto grad = as(plain(piece.dst, activation(blocked_out), dout + first * image_out), desc.diff_dst_desc(), stream);
    memory scratchpad(desc.scratchpad_desc(), cpu());
    into(plain(piece.weights, tag::oihw, sums[part].data()), desc.diff_weights_desc(), stream, [&](memory result) {
      dnnl::convolution_backward_weights(desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, grad},
                                                                {DNNL_ARG_DIFF_WEIGHTS, result},
                                                                {DNNL_ARG_SCRATCHPAD, scratchpad}});
    });
    stream.wait();
  } catch (...) {
#pragma omp critical
    failure = std::current_exception();
  }
  omp_set_num_threads(threads);
  if (failure) std::rethrow_exception(failure);
  for (int64_t i = 0; i < size; ++i) {
    float total = sums[0][i];
    for (int64_t part = 1; part < parts; ++part) total += sums[part][i];
    dw[i] = total;
  }
}

}  // namespace

std::vector<paddle::Tensor> ConvolutionForward(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int pad,
                                               bool blocked_in, bool blocked_out, int threads) {
  omp_set_num_threads(threads);
  Geometry geometry(x, w, stride, pad);
  check_layouts(geometry, blocked_in, blocked_out);
  auto out = paddle::empty(geometry.dst, paddle::DataType::FLOAT32, x.place());
  dnnl::stream stream(cpu());
  auto desc = geometry.forward();
  auto src = as(plain(geometry.src, activation(blocked_in), x), desc.src_desc(), stream);
  auto weights = as(plain(geometry.weights, tag::oihw, w), desc.weights_desc(), stream);
  into(plain(geometry.dst, activation(blocked_out), out), desc.dst_desc(), stream, [&](memory dst) {
    dnnl::convolution_forward(desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights},
                                                     {DNNL_ARG_DST, dst}});
  });
  stream.wait();
  return {out};
}

std::vector<paddle::Tensor> ConvolutionBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                const paddle::Tensor& dout, int stride, int pad, bool blocked_in,
                                                bool blocked_out, int threads) {
  omp_set_num_threads(threads);
  Geometry geometry(x, w, stride, pad);
  check_layouts(geometry, blocked_in, blocked_out);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, x.place());
  dnnl::stream stream(cpu());
  auto hint = geometry.forward();
  dnnl::convolution_backward_data::primitive_desc data_desc(
      cpu(), dnnl::algorithm::convolution_direct, geometry.chosen(geometry.src), geometry.chosen(geometry.weights),
      geometry.chosen(geometry.dst), geometry.strides, geometry.padding, geometry.padding, hint);
  auto grad_out = plain(geometry.dst, activation(blocked_out), dout);
  auto grad = as(grad_out, data_desc.diff_dst_desc(), stream);
  auto weights = as(plain(geometry.weights, tag::oihw, w), data_desc.weights_desc(), stream);
  into(plain(geometry.src, activation(blocked_in), dx), data_desc.diff_src_desc(), stream, [&](memory diff_src) {
    dnnl::convolution_backward_data(data_desc).execute(stream, {{DNNL_ARG_DIFF_DST, grad},
                                                                {DNNL_ARG_WEIGHTS, weights},
                                                                {DNNL_ARG_DIFF_SRC, diff_src}});
  });
  stream.wait();
  weight_gradient(geometry, x.data<float>(), dout.data<float>(), blocked_in, blocked_out, threads, dw.data<float>());
  return {dx, dw};
}

// x in nChw8c (blocked) or NCHW, from the other; its gradient, the other way.
std::vector<paddle::Tensor> Relayout(const paddle::Tensor& x, bool blocked) {
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 4 && x.shape()[1] % 8 == 0,
           "nChw8c holds float32 images in blocks of eight channels");
  auto out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto shape = x.shape();
  memory::dims dims(shape.begin(), shape.end());
  auto source = plain(dims, activation(!blocked), x), target = plain(dims, activation(blocked), out);
  dnnl::stream stream(cpu());
  dnnl::reorder(source, target).execute(stream, source, target);
  stream.wait();
  return {out};
}

std::vector<paddle::Tensor> RelayoutBackward(const paddle::Tensor& grad_out, bool blocked) {
  return Relayout(grad_out, !blocked);
}

PD_BUILD_OP(dnsd_relayout)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"blocked: bool"})
    .SetKernelFn(PD_KERNEL(Relayout));

PD_BUILD_GRAD_OP(dnsd_relayout)
    .Inputs({paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"blocked: bool"})
    .SetKernelFn(PD_KERNEL(RelayoutBackward));

PD_BUILD_OP(dnsd_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int", "blocked_in: bool", "blocked_out: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(ConvolutionForward));

PD_BUILD_GRAD_OP(dnsd_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "padding: int", "blocked_in: bool", "blocked_out: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(ConvolutionBackward));
