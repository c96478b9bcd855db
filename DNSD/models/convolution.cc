// DNSD's CPU convolution (run.cpu_numerics onednn): oneDNN's forward, backward-data and backward-weights primitives
// on float32 activations (NCHW, or nChw8c between DNSD's operators) and the OIHW weights Paddle holds, each reordered
// where oneDNN chooses another layout.
// Every primitive runs on a fixed split of the images (in_parts), so its bits do not depend on the thread count.
// oneDNN picks its kernels by the CPU's instruction sets: pinned to AVX2, every CPU that portable numerics serve runs
// the same ones.
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

  // Floats per image of the input and of the output, in either layout.
  int64_t image_in() const { return src[1] * src[2] * src[3]; }
  int64_t image_out() const { return dst[1] * dst[2] * dst[3]; }

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

// oneDNN sizes a kernel's blocking, and with it the order of its sums, by the threads it may use when the primitive is
// made (brgconv's backward-data on 3 threads sums otherwise than on 2). So each primitive is made for one thread, and
// the images are split into a fixed number of parts, each run on one thread: the bits do not depend on the threads.
constexpr int64_t kParts = 8;

// Runs run(piece, part, its first image, primitive descriptor, stream) on each part, on up to threads threads, with the
// descriptors make(piece) made for one thread, one per part size.
template <typename Desc, typename Make, typename Run>
void in_parts(const Geometry& geometry, int threads, Make make, Run run) {
  int64_t images = geometry.src[0], parts = std::min(kParts, images);
  auto first = [&](int64_t part) { return part * images / parts; };
  omp_set_num_threads(1);
  std::map<int64_t, Desc> descs;
  for (int64_t part = 0; part < parts; ++part) {
    int64_t count = first(part + 1) - first(part);
    if (!descs.count(count)) descs.emplace(count, make(geometry.on(count)));
  }
  omp_set_num_threads(threads);
  std::exception_ptr failure;  // an exception may not leave a parallel region
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t part = 0; part < parts; ++part) try {
    int64_t count = first(part + 1) - first(part);
    dnnl::stream stream(cpu());
    run(geometry.on(count), part, first(part), descs.at(count), stream);
    stream.wait();
  } catch (...) {
#pragma omp critical
    failure = std::current_exception();
  }
  if (failure) std::rethrow_exception(failure);
}

// Backward-weights sums over the images: each part's sum into its own buffer, the parts' sums added in order.
void weight_gradient(const Geometry& geometry, const float* x, const float* dout, bool blocked_in, bool blocked_out,
                     int threads, float* dw) {
  int64_t size = geometry.weights[0] * geometry.weights[1] * geometry.weights[2] * geometry.weights[3];
  std::vector<std::vector<float>> sums(std::min(kParts, geometry.src[0]), std::vector<float>(size));
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // each thread its own
  in_parts<dnnl::convolution_backward_weights::primitive_desc>(
      geometry, threads,
      [&](const Geometry& piece) {
        return dnnl::convolution_backward_weights::primitive_desc(
            cpu(), dnnl::algorithm::convolution_direct, piece.chosen(piece.src), piece.chosen(piece.weights),
            piece.chosen(piece.dst), piece.strides, piece.padding, piece.padding, piece.forward(), attributes);
      },
      [&](const Geometry& piece, int64_t part, int64_t first, const auto& desc, dnnl::stream& stream) {
        auto src = as(plain(piece.src, activation(blocked_in), x + first * geometry.image_in()), desc.src_desc(),
                      stream);
        auto grad = as(plain(piece.dst, activation(blocked_out), dout + first * geometry.image_out()),
                       desc.diff_dst_desc(), stream);
        memory scratchpad(desc.scratchpad_desc(), cpu());
        into(plain(piece.weights, tag::oihw, sums[part].data()), desc.diff_weights_desc(), stream, [&](memory result) {
          dnnl::convolution_backward_weights(desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, grad},
                                                                    {DNNL_ARG_DIFF_WEIGHTS, result},
                                                                    {DNNL_ARG_SCRATCHPAD, scratchpad}});
        });
      });
  for (int64_t i = 0; i < size; ++i) {
    float total = sums[0][i];
    for (size_t part = 1; part < sums.size(); ++part) total += sums[part][i];
    dw[i] = total;
  }
}

}  // namespace

std::vector<paddle::Tensor> ConvolutionForward(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int pad,
                                               bool blocked_in, bool blocked_out, int threads) {
  Geometry geometry(x, w, stride, pad);
  check_layouts(geometry, blocked_in, blocked_out);
  auto out = paddle::empty(geometry.dst, paddle::DataType::FLOAT32, x.place());
  in_parts<dnnl::convolution_forward::primitive_desc>(
      geometry, threads, [](const Geometry& piece) { return piece.forward(); },
      [&](const Geometry& piece, int64_t, int64_t first, const auto& desc, dnnl::stream& stream) {
        auto src = as(plain(piece.src, activation(blocked_in), x.data<float>() + first * geometry.image_in()),
                      desc.src_desc(), stream);
        auto weights = as(plain(piece.weights, tag::oihw, w), desc.weights_desc(), stream);
        auto target = plain(piece.dst, activation(blocked_out), out.data<float>() + first * geometry.image_out());
        into(target, desc.dst_desc(), stream, [&](memory dst) {
          dnnl::convolution_forward(desc).execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights},
                                                           {DNNL_ARG_DST, dst}});
        });
      });
  return {out};
}

std::vector<paddle::Tensor> ConvolutionBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                const paddle::Tensor& dout, int stride, int pad, bool blocked_in,
                                                bool blocked_out, int threads) {
  Geometry geometry(x, w, stride, pad);
  check_layouts(geometry, blocked_in, blocked_out);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, x.place());
  in_parts<dnnl::convolution_backward_data::primitive_desc>(
      geometry, threads,
      [](const Geometry& piece) {
        return dnnl::convolution_backward_data::primitive_desc(
            cpu(), dnnl::algorithm::convolution_direct, piece.chosen(piece.src), piece.chosen(piece.weights),
            piece.chosen(piece.dst), piece.strides, piece.padding, piece.padding, piece.forward());
      },
      [&](const Geometry& piece, int64_t, int64_t first, const auto& desc, dnnl::stream& stream) {
        auto grad = as(plain(piece.dst, activation(blocked_out), dout.data<float>() + first * geometry.image_out()),
                       desc.diff_dst_desc(), stream);
        auto weights = as(plain(piece.weights, tag::oihw, w), desc.weights_desc(), stream);
        auto target = plain(piece.src, activation(blocked_in), dx.data<float>() + first * geometry.image_in());
        into(target, desc.diff_src_desc(), stream, [&](memory diff_src) {
          dnnl::convolution_backward_data(desc).execute(stream, {{DNNL_ARG_DIFF_DST, grad}, {DNNL_ARG_WEIGHTS, weights},
                                                                 {DNNL_ARG_DIFF_SRC, diff_src}});
        });
      });
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
