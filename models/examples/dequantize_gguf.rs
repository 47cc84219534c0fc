//! Writes a GGUF file's weights dequantized to f32 (same metadata, same tensor names), so that
//! another implementation can run exactly the same weights without quantized matmuls
//! (`scripts/reference_compare.py`). Dequantization is exact: every f32 is a weight of the file.
//!
//! `cargo run -p mycel-models --example dequantize_gguf -- <in.gguf> <out.gguf>`
#![allow(clippy::unwrap_used, missing_docs)]

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: dequantize_gguf <in.gguf> <out.gguf>";
    let mut args = std::env::args().skip(1);
    let (input, output) = (args.next().ok_or(usage)?, args.next().ok_or(usage)?);
    let mut reader = std::io::BufReader::new(std::fs::File::open(&input)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut reader, name, &Device::Cpu)?;
        let f = QTensor::quantize(&q.dequantize(&Device::Cpu)?, GgmlDType::F32)?;
        tensors.push((name.clone(), f));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: Vec<_> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<_> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let tmp = format!("{output}.partial");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    gguf_file::write(&mut w, &metadata, &tensors)?;
    drop(w);
    std::fs::rename(&tmp, &output)?;
    eprintln!("wrote {output}: {} tensors as f32", tensors.len());
    Ok(())
}
