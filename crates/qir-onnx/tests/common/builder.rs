//! ONNX models built in Rust with the generated protobuf types, for tests that must not
//! depend on Python (errors, truncation, training).

use prost::Message;
use qir_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
    type_proto,
};

/// A graph under construction.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    pub graph: GraphProto,
    pub opset: i64,
}

/// An attribute.
pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    S(&'static str),
}

pub fn value_info(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => dimension::Value::DimValue(*n),
                                None => dimension::Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

impl Builder {
    pub fn new(opset: i64) -> Builder {
        Builder {
            graph: GraphProto {
                name: Some("test_graph".into()),
                ..Default::default()
            },
            opset,
        }
    }

    /// A float input; `None` dimensions are symbolic.
    pub fn input(&mut self, name: &str, dims: &[Option<i64>]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, DataType::Float, dims));
        self
    }

    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        self.graph.initializer.push(f32_tensor(name, dims, data));
        self
    }

    pub fn init_i64(&mut self, name: &str, data: &[i64]) -> &mut Self {
        self.graph.initializer.push(TensorProto {
            name: Some(name.into()),
            dims: vec![data.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: data.to_vec(),
            ..Default::default()
        });
        self
    }

    pub fn node(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) -> &mut Self {
        let attribute = attrs
            .into_iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: Some(n.into()),
                    ..Default::default()
                };
                let t = match a {
                    A::I(v) => {
                        p.i = Some(v);
                        AttributeType::Int
                    }
                    A::F(v) => {
                        p.f = Some(v);
                        AttributeType::Float
                    }
                    A::Is(v) => {
                        p.ints = v;
                        AttributeType::Ints
                    }
                    A::S(v) => {
                        p.s = Some(v.as_bytes().to_vec());
                        AttributeType::String
                    }
                };
                p.r#type = Some(t as i32);
                p
            })
            .collect();
        self.graph.node.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        });
        self
    }

    pub fn model(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("qir-onnx tests".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.model().encode_to_vec()
    }
}

/// Deterministic pseudo-random floats in [-bound, bound] (a small LCG: the tests need
/// reproducible weights, not good randomness).
pub fn uniform(seed: u64, n: usize, bound: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * bound
        })
        .collect()
}

/// The digits MLP as PyTorch exports it: 64 -> 32 (Gemm transB=1, Relu) -> 10, symbolic
/// batch, weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch initializes them.
pub fn digits_mlp() -> Builder {
    let mut b = Builder::new(17);
    let (b1, b2) = (1.0 / 64f32.sqrt(), 1.0 / 32f32.sqrt());
    b.input("input", &[None, Some(64)])
        .init_f32("fc1.weight", &[32, 64], &uniform(1, 32 * 64, b1))
        .init_f32("fc1.bias", &[32], &uniform(2, 32, b1))
        .init_f32("fc2.weight", &[10, 32], &uniform(3, 10 * 32, b2))
        .init_f32("fc2.bias", &[10], &uniform(4, 10, b2))
        .node(
            "/fc1/Gemm",
            "Gemm",
            &["input", "fc1.weight", "fc1.bias"],
            &["/fc1/Gemm_output_0"],
            vec![
                ("transB", A::I(1)),
                ("alpha", A::F(1.0)),
                ("beta", A::F(1.0)),
            ],
        )
        .node(
            "/relu/Relu",
            "Relu",
            &["/fc1/Gemm_output_0"],
            &["/relu/Relu_output_0"],
            vec![],
        )
        .node(
            "/fc2/Gemm",
            "Gemm",
            &["/relu/Relu_output_0", "fc2.weight", "fc2.bias"],
            &["logits"],
            vec![("transB", A::I(1))],
        )
        .output("logits");
    b
}

/// A conv-BN-ReLU CNN for 8x8 images: conv 1->4 3x3 pad 1, batch norm, relu, max-pool 2,
/// flatten, Gemm 64 -> 10.
pub fn digits_cnn() -> Builder {
    let mut b = Builder::new(17);
    b.input("x", &[None, Some(1), Some(8), Some(8)])
        .init_f32("conv.weight", &[4, 1, 3, 3], &uniform(5, 36, 1.0 / 3.0))
        .init_f32("conv.bias", &[4], &uniform(6, 4, 0.1))
        .init_f32("bn.weight", &[4], &[1.0, 0.9, 1.1, 1.2])
        .init_f32("bn.bias", &[4], &[0.0, 0.1, -0.1, 0.05])
        .init_f32("bn.running_mean", &[4], &[0.1, -0.2, 0.0, 0.3])
        .init_f32("bn.running_var", &[4], &[1.0, 0.5, 2.0, 1.5])
        .init_f32("fc.weight", &[10, 64], &uniform(7, 640, 0.125))
        .init_f32("fc.bias", &[10], &uniform(8, 10, 0.125))
        .node(
            "conv",
            "Conv",
            &["x", "conv.weight", "conv.bias"],
            &["c"],
            vec![
                ("pads", A::Is(vec![1, 1, 1, 1])),
                ("kernel_shape", A::Is(vec![3, 3])),
            ],
        )
        .node(
            "bn",
            "BatchNormalization",
            &[
                "c",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
            ],
            &["n"],
            vec![("epsilon", A::F(1e-5)), ("momentum", A::F(0.9))],
        )
        .node("relu", "Relu", &["n"], &["r"], vec![])
        .node(
            "pool",
            "MaxPool",
            &["r"],
            &["p"],
            vec![
                ("kernel_shape", A::Is(vec![2, 2])),
                ("strides", A::Is(vec![2, 2])),
            ],
        )
        .node(
            "flatten",
            "Flatten",
            &["p"],
            &["f"],
            vec![("axis", A::I(1))],
        )
        .node(
            "fc",
            "Gemm",
            &["f", "fc.weight", "fc.bias"],
            &["logits"],
            vec![("transB", A::I(1))],
        )
        .output("logits");
    b
}
