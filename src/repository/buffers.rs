//! Large buffers recycled between pipeline stages and object reads.

use std::sync::Arc;

/// Large buffers recycled between pipeline stages (packs between packers and uploader, batches
/// between reader and packer, stored and decrypted packs in a restore or verify): a handful are allocated once
/// instead of one per pack or batch, so memory neither grows by reallocation (no doubling
/// copies) nor stays behind in the allocator's per-thread arenas.
#[derive(Debug, Clone, Default)]
pub struct BufferPool {
    free: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
}

/// Buffers kept for reuse; more in flight at once are freed when they come back.
const POOLED_BUFFERS: usize = 8;

impl BufferPool {
    /// A pool of buffers allocated with `capacity` bytes (e.g. a pack's target size plus room
    /// for its last chunk; 0 leaves sizing to the user).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { free: Arc::default(), capacity }
    }

    /// An empty buffer.
    #[must_use]
    pub fn get(&self) -> Vec<u8> {
        self.free.lock().ok().and_then(|mut free| free.pop()).unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Returns a buffer for reuse.
    pub fn put(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.put_filled(buffer);
    }

    /// Returns a buffer for reuse with its content: a user that resizes it before use (reads
    /// into it) then zero-fills only what lies beyond that content.
    pub fn put_filled(&self, buffer: Vec<u8>) {
        if let Ok(mut free) = self.free.lock()
            && free.len() < POOLED_BUFFERS
        {
            free.push(buffer);
        }
    }
}

/// The two pools a reader of whole objects needs: stored (compressed, encrypted) bytes and
/// plaintexts. Kept apart so that each pool's buffers stay the size of their role: one pool for
/// both would grow every buffer to the largest plaintext.
#[derive(Debug, Clone, Default)]
pub struct ReadBuffers {
    /// Buffers objects are read into from storage.
    pub stored: BufferPool,
    /// Buffers objects are decrypted and decompressed into.
    pub plaintext: BufferPool,
}
