//! Device → host reads. Always async: in the browser a blocking GPU read panics, so the engine
//! only awaits, and native callers block on the future at their edge.

use burn::tensor::{Int, Tensor};

use crate::engine::error::{EngineError, Result};

pub async fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| EngineError::Device(format!("{e:?}")))?;
    Ok(data.iter::<f32>().collect())
}

pub async fn ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = t.into_data_async().await.map_err(|e| EngineError::Device(format!("{e:?}")))?;
    Ok(data.iter::<i64>().collect())
}

/// Waits until the work behind `t` is done by reading one of its values back (a timed step
/// must include its work; devices run asynchronously).
pub async fn wait(t: Tensor<3>) -> Result<()> {
    floats(t.slice([0..1, 0..1, 0..1])).await.map(drop)
}
