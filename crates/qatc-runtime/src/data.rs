//! Labelled image data sets read from an IDX directory, and their batches shaped for a
//! model's inputs.
//!
//! A data directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally gzipped (a
//! `.gz` name is tried when the plain one is absent; the reader recognizes gzip by its
//! bytes). Pixels are u8; a batch scales them to f32 by a factor chosen from the data
//! ([`PixelScale::Auto`]: the UCI digits use 0..16 and MNIST 0..255) or given.
//!
//! The model's input declarations decide the batch layout ([`Feed::for_graph`]): the
//! image input is the graph's float input of rank ≥ 2 (`%x` if there are several), whose
//! dimensions after the first must hold one example (`f32[B, 64]`, `f32[B, 1, 8, 8]` and
//! `f32[B, 8, 8]` all take the same 8×8 data); the label input is the i32 or i64 input of
//! rank 1 (`%label` if there are several). Invariants: every batch matches those
//! declarations exactly; shuffling is deterministic per (seed, epoch); an image set always
//! holds as many labels as images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qir::{Data, Dim, ElemType, Graph, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, RuntimeError};
use crate::io::idx::{IdxArray, dims_text, read_idx};

/// Images with one class label each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    example_dims: Vec<usize>,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl ImageSet {
    /// An image set of `labels.len()` examples of `example_dims` pixels each.
    pub fn new(example_dims: Vec<usize>, pixels: Vec<u8>, labels: Vec<u8>) -> Result<ImageSet> {
        let per: usize = example_dims.iter().product();
        if per == 0 {
            return Err(RuntimeError::Data(format!(
                "images of {} pixels are empty",
                dims_text(&example_dims)
            )));
        }
        if pixels.len() != per * labels.len() {
            return Err(RuntimeError::Data(format!(
                "{} pixels do not make {} images of {}",
                pixels.len(),
                labels.len(),
                dims_text(&example_dims)
            )));
        }
        Ok(ImageSet {
            example_dims,
            pixels,
            labels,
        })
    }

    /// Pairs an IDX image array (`N×H×W`, or `N×D`) with an IDX label array (`N`); the
    /// names are used in messages.
    pub fn from_idx(
        images: IdxArray,
        labels: IdxArray,
        images_name: &str,
        labels_name: &str,
    ) -> Result<ImageSet> {
        if images.dims.len() < 2 {
            return Err(RuntimeError::Data(format!(
                "{images_name} holds a {} array, images need at least 2 dimensions (count × pixels)",
                images.dims_text()
            )));
        }
        if labels.dims.len() != 1 {
            return Err(RuntimeError::Data(format!(
                "{labels_name} holds a {} array, labels need 1 dimension",
                labels.dims_text()
            )));
        }
        if images.dims[0] != labels.dims[0] {
            return Err(RuntimeError::Data(format!(
                "{images_name} has {} images but {labels_name} has {} labels",
                images.dims[0], labels.dims[0]
            )));
        }
        ImageSet::new(images.dims[1..].to_vec(), images.data, labels.data)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True if the set holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The dimensions of one example (`[8, 8]`).
    pub fn example_dims(&self) -> &[usize] {
        &self.example_dims
    }
    /// Pixels per example.
    pub fn example_len(&self) -> usize {
        self.example_dims.iter().product()
    }
    /// The pixels of example `i` (`None` past the end).
    pub fn pixels(&self, i: usize) -> Option<&[u8]> {
        let n = self.example_len();
        self.pixels.get(i * n..(i + 1) * n)
    }
    /// Every label, in order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// The largest pixel value (0 for an empty set).
    pub fn max_pixel(&self) -> u8 {
        self.pixels.iter().copied().max().unwrap_or(0)
    }
    /// The largest label (`None` for an empty set).
    pub fn max_label(&self) -> Option<u8> {
        self.labels.iter().copied().max()
    }
    /// The first `n` examples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            example_dims: self.example_dims.clone(),
            pixels: self.pixels[..n * self.example_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// A training and a test image set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// The `train-*` files.
    pub train: ImageSet,
    /// The `t10k-*` files.
    pub test: ImageSet,
}

/// The IDX file `base` or `base.gz` in `dir`, whichever exists (the plain file first).
fn find_idx(dir: &Path, base: &str) -> Result<PathBuf> {
    let plain = dir.join(base);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{base}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(RuntimeError::File {
        path: dir.to_path_buf(),
        message: format!("no {base} or {base}.gz in this directory"),
    })
}

fn load_pair(dir: &Path, prefix: &str) -> Result<ImageSet> {
    let ip = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let set = ImageSet::from_idx(read_idx(&ip)?, read_idx(&lp)?, &name(&ip), &name(&lp));
    set.map_err(|e| match e {
        RuntimeError::Data(message) => RuntimeError::File {
            path: dir.to_path_buf(),
            message,
        },
        other => other,
    })
}

impl Dataset {
    /// Reads the four IDX files of `dir` (see the module docs).
    pub fn load(dir: &Path) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(RuntimeError::File {
                path: dir.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        // the two splits decompress on two threads
        let (train, test) = std::thread::scope(|s| {
            let test = s.spawn(|| load_pair(dir, "t10k"));
            let train = load_pair(dir, "train");
            let test = test.join().unwrap_or_else(|_| {
                Err(RuntimeError::File {
                    path: dir.to_path_buf(),
                    message: "reading the test split failed".into(),
                })
            });
            (train, test)
        });
        let (train, test) = (train?, test?);
        if train.example_dims != test.example_dims {
            return Err(RuntimeError::File {
                path: dir.to_path_buf(),
                message: format!(
                    "training images are {} but test images are {}",
                    dims_text(&train.example_dims),
                    dims_text(&test.example_dims)
                ),
            });
        }
        Ok(Dataset { train, test })
    }
}

/// How u8 pixels become f32 model inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PixelScale {
    /// Divide by 16 when the training pixels are all ≤ 16 (the UCI digits, 0..16), else
    /// by 255 (MNIST and other 8-bit images), so inputs lie in [0, 1].
    Auto,
    /// Divide by this value.
    Divide(f32),
}

impl PixelScale {
    /// The factor pixels are multiplied by, given the largest training pixel.
    pub fn factor(self, max_pixel: u8) -> f32 {
        match self {
            PixelScale::Auto if max_pixel <= 16 => 1.0 / 16.0,
            PixelScale::Auto => 1.0 / 255.0,
            PixelScale::Divide(d) => 1.0 / d,
        }
    }
}

impl std::str::FromStr for PixelScale {
    type Err = String;
    /// `auto` or a positive divisor (`255`).
    fn from_str(s: &str) -> std::result::Result<PixelScale, String> {
        if s == "auto" {
            return Ok(PixelScale::Auto);
        }
        match s.parse::<f32>() {
            Ok(d) if d.is_finite() && d > 0.0 => Ok(PixelScale::Divide(d)),
            _ => Err(format!(
                "pixel scale must be 'auto' or a positive number, found '{s}'"
            )),
        }
    }
}

/// How a batch of examples is fed to a model: which inputs take the images and labels and
/// in what shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Feed {
    /// The image input's name.
    pub image: String,
    /// The image input's shape after the batch dimension.
    pub example_shape: Vec<usize>,
    /// The batch size the model fixes, if its first dimension is not symbolic.
    pub fixed_batch: Option<usize>,
    /// The label input's name and element type (i32 or i64), if the model has one.
    pub label: Option<(String, ElemType)>,
}

fn pick<'a>(cands: &[(&'a str, String)], preferred: &str) -> Option<&'a str> {
    match cands {
        [(n, _)] => Some(n),
        _ => cands.iter().find(|(n, _)| *n == preferred).map(|(n, _)| *n),
    }
}

impl Feed {
    /// The feed of `g` for examples of `example_dims` pixels (see the module docs).
    pub fn for_graph(g: &Graph, example_dims: &[usize]) -> Result<Feed> {
        let mut images: Vec<(&str, String)> = Vec::new();
        let mut labels: Vec<(&str, String)> = Vec::new();
        for id in g.inputs() {
            let node = g.node(id);
            let Some(name) = node.name.as_deref() else {
                continue;
            };
            let ty = &node.ty;
            if ty.elem.is_float() && ty.rank() >= 2 {
                images.push((name, format!("%{name}: {ty}")));
            } else if matches!(ty.elem, ElemType::I32 | ElemType::I64) && ty.rank() == 1 {
                labels.push((name, format!("%{name}: {ty}")));
            }
        }
        let list = |c: &[(&str, String)]| {
            c.iter()
                .map(|(_, d)| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let image = match pick(&images, "x") {
            Some(n) => n,
            None if images.is_empty() => {
                return Err(RuntimeError::Data(format!(
                    "graph @{} has no image input: expected a float input of rank 2 or more, like f32[B, 64] or f32[B, 1, 8, 8]",
                    g.name
                )));
            }
            None => {
                return Err(RuntimeError::Data(format!(
                    "graph @{} has several image-like inputs ({}); name the image input %x",
                    g.name,
                    list(&images)
                )));
            }
        };
        let label = match pick(&labels, "label") {
            Some(n) => Some(n),
            None if labels.is_empty() => None,
            None => {
                return Err(RuntimeError::Data(format!(
                    "graph @{} has several label-like inputs ({}); name the label input %label",
                    g.name,
                    list(&labels)
                )));
            }
        };
        let id = g
            .find(image)
            .ok_or_else(|| RuntimeError::Data(format!("no input %{image}")))?;
        let ty = g.ty(id);
        if ty.elem != ElemType::F32 {
            return Err(RuntimeError::Data(format!(
                "image input %{image} is {ty}; batches are f32"
            )));
        }
        let dims = ty.shape.dims();
        let fixed_batch = match dims.first() {
            Some(Dim::Fixed(n)) => Some(*n as usize),
            _ => None,
        };
        let example_shape: Vec<usize> = dims[1..]
            .iter()
            .map(|d| d.fixed().map(|n| n as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                RuntimeError::Data(format!(
                    "image input %{image}: {ty} may only have a symbolic first (batch) dimension"
                ))
            })?;
        let per: usize = example_shape.iter().product();
        let have: usize = example_dims.iter().product();
        if per != have {
            return Err(RuntimeError::Data(format!(
                "image input %{image}: {ty} takes {per} values per example but the data have {} = {have} pixels",
                dims_text(example_dims)
            )));
        }
        let label = match label {
            Some(n) => {
                let lid = g
                    .find(n)
                    .ok_or_else(|| RuntimeError::Data(format!("no input %{n}")))?;
                let lty = g.ty(lid);
                if let (Some(b), Some(Dim::Fixed(lb))) = (fixed_batch, lty.shape.dims().first())
                    && *lb as usize != b
                {
                    return Err(RuntimeError::Data(format!(
                        "label input %{n}: {lty} does not match the batch of %{image}: {ty}"
                    )));
                }
                Some((n.to_string(), lty.elem.clone()))
            }
            None => None,
        };
        Ok(Feed {
            image: image.to_string(),
            example_shape,
            fixed_batch,
            label,
        })
    }

    /// The batch size to use when `requested` is asked for: the model's fixed size if it
    /// has one.
    pub fn batch_size(&self, requested: usize) -> usize {
        self.fixed_batch.unwrap_or(requested)
    }

    /// Number of batches of `batch_size` (or the model's fixed size) in `n` examples.
    pub fn batch_count(&self, n: usize, batch_size: usize) -> usize {
        let size = self.batch_size(batch_size).max(1);
        if self.fixed_batch.is_some() {
            n / size
        } else {
            n.div_ceil(size)
        }
    }

    /// The batch of examples `indices` of `set`, pixels multiplied by `scale`.
    pub fn batch(&self, set: &ImageSet, indices: &[usize], scale: f32) -> Result<Batch> {
        let per = set.example_len();
        let mut x = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let p = set.pixels(i).ok_or_else(|| {
                RuntimeError::Data(format!(
                    "example {i} is past the end of {} examples",
                    set.len()
                ))
            })?;
            x.extend(p.iter().map(|&v| v as f32 * scale));
            labels.push(set.labels[i] as usize);
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.example_shape);
        let xt = Tensor::f32(shape, x)
            .ok_or_else(|| RuntimeError::Data(format!("examples do not fill %{}", self.image)))?;
        let mut inputs = HashMap::from([(self.image.clone(), xt)]);
        if let Some((name, elem)) = &self.label {
            let data = match elem {
                ElemType::I64 => Data::I64(labels.iter().map(|&l| l as i64).collect()),
                _ => Data::I32(labels.iter().map(|&l| l as i32).collect()),
            };
            let lt = Tensor::new(vec![labels.len()], data)
                .ok_or_else(|| RuntimeError::Data(format!("labels do not fill %{name}")))?;
            inputs.insert(name.clone(), lt);
        }
        Ok(Batch { inputs, labels })
    }

    /// The batches of `set` in `order`, `batch_size` examples each (the model's fixed size
    /// if it has one). The last, smaller batch is kept unless the model fixes the size.
    pub fn batches<'a>(
        &'a self,
        set: &'a ImageSet,
        order: Vec<usize>,
        batch_size: usize,
        scale: f32,
    ) -> Batches<'a> {
        let size = self.batch_size(batch_size).max(1);
        Batches {
            feed: self,
            set,
            order,
            size,
            pos: 0,
            drop_last: self.fixed_batch.is_some(),
            scale,
        }
    }
}

/// One batch: the model inputs and the labels as class indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Inputs by name: the images and, if the model takes them, the labels.
    pub inputs: HashMap<String, Tensor>,
    /// The labels of the batch's examples, in order.
    pub labels: Vec<usize>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Iterator over the batches of an image set (see [`Feed::batches`]).
pub struct Batches<'a> {
    feed: &'a Feed,
    set: &'a ImageSet,
    order: Vec<usize>,
    size: usize,
    pos: usize,
    drop_last: bool,
    scale: f32,
}

impl Batches<'_> {
    /// Number of batches the iterator yields in total.
    pub fn count_total(&self) -> usize {
        if self.drop_last {
            self.order.len() / self.size
        } else {
            self.order.len().div_ceil(self.size)
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        let end = (self.pos + self.size).min(self.order.len());
        if end <= self.pos || (self.drop_last && end - self.pos < self.size) {
            return None;
        }
        let idx = &self.order[self.pos..end];
        self.pos = end;
        Some(self.feed.batch(self.set, idx, self.scale))
    }
}

/// Calls `f` with the batches of `batches`, each assembled on a second thread while the
/// batch before it is being used (at most `depth` batches wait ready), so that reading and
/// scaling pixels overlaps the training step. The producer stops when `f` returns.
pub fn prefetched<R>(
    batches: Batches<'_>,
    depth: usize,
    f: impl FnOnce(&mut dyn Iterator<Item = Result<Batch>>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        scope.spawn(move || {
            for b in batches {
                if tx.send(b).is_err() {
                    break;
                }
            }
        });
        let mut it = rx.into_iter();
        f(&mut it)
        // `it` (the receiver) drops here, before the scope joins the producer: a send
        // that is blocked then fails and the producer ends.
    })
}

/// `0..n` in the order of epoch `epoch` of a run seeded with `seed`: a Fisher–Yates
/// shuffle driven by ChaCha8 with `seed` as key and `epoch` as stream, so each epoch's
/// order depends only on (seed, epoch).
pub fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rng);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::idx::encode_idx;
    use qir::Type;

    fn graph(x: &str, label: Option<&str>) -> Graph {
        let src_dims: Vec<Dim> = x
            .split(',')
            .map(|d| match d.trim().parse::<u64>() {
                Ok(n) => Dim::Fixed(n),
                Err(_) => Dim::from(d.trim()),
            })
            .collect();
        let mut g = Graph::new("m");
        g.add_input("x", Type::f32(&src_dims)).unwrap();
        if let Some(l) = label {
            let elem = ElemType::from_keyword(l).unwrap();
            g.add_input("label", Type::new(elem, qir::Shape(vec![Dim::from("B")])))
                .unwrap();
        }
        g
    }

    fn set(n: usize) -> ImageSet {
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i % 17) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        ImageSet::new(vec![2, 2], pixels, labels).unwrap()
    }

    #[test]
    fn feed_follows_the_input_declaration() {
        let s = set(5);
        let f = Feed::for_graph(&graph("B, 4", Some("i32")), s.example_dims()).unwrap();
        assert_eq!(f.example_shape, [4]);
        let b = f.batch(&s, &[1, 3], 0.5).unwrap();
        assert_eq!(b.inputs["x"].shape, [2, 4]);
        assert_eq!(
            b.inputs["x"].as_f32().unwrap(),
            &[2.0, 2.5, 3.0, 3.5, 6.0, 6.5, 7.0, 7.5]
        );
        assert_eq!(b.inputs["label"].data, Data::I32(vec![1, 0]));
        let f = Feed::for_graph(&graph("B, 1, 2, 2", Some("i64")), s.example_dims()).unwrap();
        let b = f.batch(&s, &[4], 1.0).unwrap();
        assert_eq!(b.inputs["x"].shape, [1, 1, 2, 2]);
        assert_eq!(b.inputs["label"].data, Data::I64(vec![1]));
        let f = Feed::for_graph(&graph("B, 4", None), s.example_dims()).unwrap();
        assert_eq!(f.batch(&s, &[0], 1.0).unwrap().inputs.len(), 1);
    }

    #[test]
    fn feed_errors_name_the_input() {
        let e = Feed::for_graph(&graph("B, 5", Some("i32")), &[2, 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "image input %x: f32[B, 5] takes 5 values per example but the data have 2×2 = 4 pixels"
        );
        let e = Feed::for_graph(&graph("B, N", None), &[2, 2]).unwrap_err();
        assert!(
            e.to_string().contains("may only have a symbolic first"),
            "{e}"
        );
        let mut g = Graph::new("m");
        g.add_input("lr", Type::scalar(ElemType::F32)).unwrap();
        let e = Feed::for_graph(&g, &[2, 2]).unwrap_err();
        assert!(
            e.to_string().starts_with("graph @m has no image input"),
            "{e}"
        );
    }

    #[test]
    fn batches_cover_every_example_once() {
        let s = set(7);
        let f = Feed::for_graph(&graph("B, 4", Some("i32")), s.example_dims()).unwrap();
        let order = shuffled(7, 3, 0);
        let it = f.batches(&s, order.clone(), 3, 1.0);
        assert_eq!(it.count_total(), 3);
        let sizes: Vec<usize> = it.map(|b| b.unwrap().len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        // Same seed and epoch: same order; another epoch: another order.
        assert_eq!(shuffled(7, 3, 0), order);
        assert_ne!(shuffled(100, 3, 1), shuffled(100, 3, 0));
        // A fixed batch size drops the last partial batch.
        let f = Feed::for_graph(&graph("2, 4", Some("i32")), s.example_dims()).unwrap();
        let sizes: Vec<usize> = f
            .batches(&s, (0..7).collect(), 3, 1.0)
            .map(|b| b.unwrap().len())
            .collect();
        assert_eq!(sizes, [2, 2, 2]);
    }

    #[test]
    fn pixel_scale() {
        assert_eq!(PixelScale::Auto.factor(16), 1.0 / 16.0);
        assert_eq!(PixelScale::Auto.factor(17), 1.0 / 255.0);
        assert_eq!(PixelScale::Auto.factor(255), 1.0 / 255.0);
        assert_eq!(
            "255".parse::<PixelScale>().unwrap(),
            PixelScale::Divide(255.0)
        );
        assert!("0".parse::<PixelScale>().is_err());
    }

    fn write_dir(dir: &Path, train: (usize, usize), test: (usize, usize), gz: bool) {
        let put = |name: &str, dims: &[usize]| {
            let n: usize = dims.iter().product();
            let bytes = encode_idx(dims, &vec![1u8; n]).unwrap();
            if gz {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                std::fs::write(dir.join(format!("{name}.gz")), e.finish().unwrap()).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        };
        put("train-images-idx3-ubyte", &[train.0, 3, 3]);
        put("train-labels-idx1-ubyte", &[train.1]);
        put("t10k-images-idx3-ubyte", &[test.0, 3, 3]);
        put("t10k-labels-idx1-ubyte", &[test.1]);
    }

    #[test]
    fn loads_directories_and_reports_mismatches() {
        let d = tempfile::tempdir().unwrap();
        write_dir(d.path(), (4, 4), (2, 2), true);
        let ds = Dataset::load(d.path()).unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (4, 2));
        assert_eq!(ds.train.example_dims(), [3, 3]);

        let d = tempfile::tempdir().unwrap();
        write_dir(d.path(), (4, 3), (2, 2), false);
        let e = Dataset::load(d.path()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                ": train-images-idx3-ubyte has 4 images but train-labels-idx1-ubyte has 3 labels"
            ),
            "{e}"
        );
        std::fs::remove_file(d.path().join("t10k-labels-idx1-ubyte")).unwrap();
        std::fs::remove_file(d.path().join("train-labels-idx1-ubyte")).unwrap();
        let e = Dataset::load(d.path()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                ": no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz in this directory"
            ),
            "{e}"
        );
        let e = Dataset::load(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("nope: not a directory"), "{e}");
    }
}
