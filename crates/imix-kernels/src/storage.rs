//! Access to the raw data of candle storage.

use candle_core::Layout;

/// The contiguous elements `layout` describes in `v`, or an error naming `op`.
pub fn contiguous<'a, T>(v: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: contiguous input required")))?;
    Ok(&v[a..b])
}

/// [`contiguous`] for writing.
pub fn contiguous_mut<'a, T>(
    v: &'a mut [T],
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [T]> {
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: contiguous input required")))?;
    Ok(&mut v[a..b])
}
