// DNSD's CPU convolution (run.cpu_numerics onednn): oneDNN's forward, backward-data and backward-weights primitives
// on the float32 NCHW activations and OIHW weights Paddle holds, each reordered into the layout oneDNN chooses.
// Forward and backward-data give each output element to one thread, so their bits do not depend on the thread count;
// backward-weights sums over the images in an order that does, so it runs on one thread. oneDNN picks its kernels by
// the CPU's instruction sets: pinned to AVX2, every CPU that portable numerics serve runs the same ones.
#include <omp.h>

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

  memory::desc chosen(const memory::dims& dims) const { return {dims, memory::data_type::f32, tag::any}; }

  dnnl::convolution_forward::primitive_desc forward() const {
    return {cpu(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, chosen(src),
            chosen(weights), chosen(dst), strides, padding, padding};
  }
};

memory plain(const memory::dims& dims, tag layout, const paddle::Tensor& tensor) {
  return {{dims, memory::data_type::f32, layout}, cpu(), const_cast<float*>(tensor.data<float>())};
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

}  // namespace

std::vector<paddle::Tensor> Forward(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int pad,
                                    int threads) {
  omp_set_num_threads(threads);
  Geometry geometry(x, w, stride, pad);
  auto out = paddle::empty(geometry.dst, paddle::DataType::FLOAT32, x.place());
  dnnl::stream stream(cpu());
  auto desc = geometry.forward();
  auto src = as(plain(geometry.src, tag::nchw, x), desc.src_desc(), stream);
  auto weights = as(plain(geometry.weights, tag::oihw, w), desc.weights_desc(), stream);
  into(plain(geometry.dst, tag::nchw, out), desc.dst_desc(), stream, [&](memory dst) {
    dnnl::convolution_forward(desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights},
                                                     {DNNL_ARG_DST, dst}});
  });
  stream.wait();
  return {out};
}

std::vector<paddle::Tensor> Backward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dout,
                                     int stride, int pad, int threads) {
  omp_set_num_threads(threads);
  Geometry geometry(x, w, stride, pad);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, x.place());
  dnnl::stream stream(cpu());
  auto hint = geometry.forward();
  dnnl::convolution_backward_data::primitive_desc data_desc(
      cpu(), dnnl::algorithm::convolution_direct, geometry.chosen(geometry.src), geometry.chosen(geometry.weights),
      geometry.chosen(geometry.dst), geometry.strides, geometry.padding, geometry.padding, hint);
  dnnl::convolution_backward_weights::primitive_desc weights_desc(
      cpu(), dnnl::algorithm::convolution_direct, geometry.chosen(geometry.src), geometry.chosen(geometry.weights),
      geometry.chosen(geometry.dst), geometry.strides, geometry.padding, geometry.padding, hint);
  auto grad_out = plain(geometry.dst, tag::nchw, dout);
  auto grad = as(grad_out, data_desc.diff_dst_desc(), stream);
  auto weights = as(plain(geometry.weights, tag::oihw, w), data_desc.weights_desc(), stream);
  into(plain(geometry.src, tag::nchw, dx), data_desc.diff_src_desc(), stream, [&](memory diff_src) {
    dnnl::convolution_backward_data(data_desc).execute(stream, {{DNNL_ARG_DIFF_DST, grad},
                                                                {DNNL_ARG_WEIGHTS, weights},
                                                                {DNNL_ARG_DIFF_SRC, diff_src}});
  });
  omp_set_num_threads(1);
  auto src = as(plain(geometry.src, tag::nchw, x), weights_desc.src_desc(), stream);
  grad = as(grad_out, weights_desc.diff_dst_desc(), stream);
  into(plain(geometry.weights, tag::oihw, dw), weights_desc.diff_weights_desc(), stream, [&](memory diff_weights) {
    dnnl::convolution_backward_weights(weights_desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, grad},
                                                                      {DNNL_ARG_DIFF_WEIGHTS, diff_weights}});
  });
  stream.wait();
  omp_set_num_threads(threads);
  return {dx, dw};
}

PD_BUILD_OP(dnsd_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(Forward));

PD_BUILD_GRAD_OP(dnsd_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "padding: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(Backward));
