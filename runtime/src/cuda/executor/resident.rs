//! Whole epochs on the device: a split made resident (uploaded once, gathered by the
//! epoch's order on the GPU), each step enqueued against it, full-size steps captured as
//! a CUDA graph and replayed, and every step's loss and output read back once per epoch.

use super::*;

impl CudaExecutor {
    /// Puts a split on the device in `slot` ([`TRAIN`] or [`EVAL`]; once per split), with
    /// buffers for `steps` steps; `false` when it does not fit in free memory (with
    /// 256 MiB and the step's own memory to spare).
    pub(super) fn make_resident(
        &mut self,
        slot: usize,
        x: &Tensor,
        y: &Tensor,
        steps: usize,
    ) -> Result<bool, ExecError> {
        let key = [fingerprint(x), fingerprint(y)];
        let rows = x.rows();
        let out_w = self.info.output_shape.iter().product::<usize>();
        if self.resident[slot]
            .as_ref()
            .is_some_and(|r| r.key == key && r.losses.len() >= steps.max(1))
        {
            return Ok(true);
        }
        if self.resident[slot].take().is_some() {
            // Freed memory returns to the pool when the stream reaches the frees.
            self.stream
                .synchronize()
                .map_err(driver_error("cannot free GPU memory"))?;
        }
        // The step's own memory at this batch size: its arena and batch buffers.
        let step_bytes = {
            let p = if slot == TRAIN {
                &self.train
            } else {
                &self.eval
            };
            let b = rows.div_ceil(steps.max(1)).max(1);
            let batch_bufs: usize = p
                .program
                .buffers
                .iter()
                .filter(|d| matches!(d.kind, BufferKind::Input | BufferKind::Output))
                .map(|d| d.len.resolve(b))
                .sum();
            4 * (p.program.arena.resolve(b) + batch_bufs)
        };
        let bytes =
            4 * (x.data.len() + y.data.len() + rows + steps + rows * out_w) + 8 + step_bytes;
        let (free, _) = self
            .device
            .context
            .mem_get_info()
            .map_err(driver_error("cannot query GPU memory"))?;
        if bytes + (256 << 20) > free {
            return Ok(false);
        }
        match self.upload_resident(x, y, key, steps, out_w) {
            Ok(r) => {
                self.resident[slot] = Some(r);
                Ok(true)
            }
            // Out of memory after all (other processes share the GPU): step per batch.
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Ok(false),
            Err(e) => Err(ExecError::new(format!(
                "cannot put the data on the GPU: {e}"
            ))),
        }
    }

    /// Uploads a split and allocates its epoch buffers.
    pub(super) fn upload_resident(
        &self,
        x: &Tensor,
        y: &Tensor,
        key: [(usize, usize, u64); 2],
        steps: usize,
        out_w: usize,
    ) -> Result<Resident, result::DriverError> {
        let rows = x.rows();
        let upload = |t: &Tensor| -> Result<CudaSlice<f32>, result::DriverError> {
            let mut s = self.stream.alloc_zeros::<f32>(t.data.len().max(1))?;
            if !t.data.is_empty() {
                self.stream
                    .memcpy_htod(&t.data, &mut s.slice_mut(0..t.data.len()))?;
            }
            Ok(s)
        };
        Ok(Resident {
            key,
            x: upload(x)?,
            y: upload(y)?,
            order: self.stream.alloc_zeros::<u32>(rows.max(1))?,
            cursor: self.stream.alloc_zeros::<u64>(1)?,
            losses: self.stream.alloc_zeros::<f32>(steps.max(1))?,
            outputs: self.stream.alloc_zeros::<f32>((rows * out_w).max(1))?,
            graph: None,
        })
    }

    /// Enqueues one step of `n` rows (the full batch is `batch`) over the split resident
    /// in `slot`: gather the rows, run the train (or eval) program, record loss and
    /// output, advance the step counter. Nothing in it depends on the step number.
    pub(super) fn enqueue_resident_step(
        &self,
        slot: usize,
        n: usize,
        batch: usize,
        widths: [usize; 2],
        ptrs: &[u64],
    ) -> Result<(), ExecError> {
        let r = self.resident[slot]
            .as_ref()
            .ok_or_else(|| ExecError::new("the data is not on the GPU"))?;
        let program = if slot == TRAIN {
            &self.train
        } else {
            &self.eval
        };
        // Buffers the program does not have are not gathered or recorded.
        let has = |key: &str| program.program.buffers.iter().any(|b| b.name == key);
        let addr = |key: &str| {
            self.batch_bufs
                .get(key)
                .map(|s| address(s, &self.stream))
                .ok_or_else(|| ExecError::new(format!("no GPU buffer for `{key}`")))
        };
        let [gather, record, advance] = [0, 1, 2].map(|i| self.data.functions[i]);
        let order = device_address(&r.order, &self.stream);
        let cursor = device_address(&r.cursor, &self.stream);
        let launch_err = |name: &str| driver_error_owned(format!("launching `{name}`"));
        let blocks = |elements: usize| {
            data_blocks(elements)
                .ok_or_else(|| ExecError::new("a batch too large for one GPU launch"))
        };
        if !has(LOSS) {
            return Err(ExecError::new(format!(
                "program `{}` has no loss buffer to record",
                program.program.name
            )));
        }
        let out_w = if has(OUTPUT) {
            self.info.output_shape.iter().product::<usize>()
        } else {
            0
        };
        if out_w > 0 && self.batch_bufs.get(OUTPUT).map_or(0, |b| b.len()) < n * out_w {
            return Err(ExecError::new(
                "the output buffer is smaller than the batch's outputs",
            ));
        }
        for (src, key, w) in [(&r.x, INPUT, widths[0]), (&r.y, LABELS, widths[1])] {
            if !has(key) {
                continue;
            }
            let elements = n * w;
            let mut args = [
                address(src, &self.stream),
                order,
                cursor,
                addr(key)?,
                w as u64,
                n as u64,
                batch as u64,
            ];
            // SAFETY: `nnc_gather_rows` takes seven 8-byte parameters; the source holds
            // every row `order` names, the batch buffer `n·w` values (`prepare`).
            unsafe {
                launch(
                    gather,
                    [blocks(elements)?, 1, 1],
                    DATA_THREADS,
                    &mut args,
                    &self.stream,
                )
            }
            .map_err(launch_err("nnc_gather_rows"))?;
        }
        self.launch_program(StepProgram::of(slot == TRAIN), n, ptrs)?;
        let mut args = [
            addr(LOSS)?,
            if has(OUTPUT) { addr(OUTPUT)? } else { 0 },
            cursor,
            address(&r.losses, &self.stream),
            address(&r.outputs, &self.stream),
            (n * out_w) as u64,
            (batch * out_w) as u64,
        ];
        // SAFETY: `nnc_record_step` takes seven 8-byte parameters; the epoch buffers hold
        // one loss per step and one output row per trained row (`make_resident`).
        unsafe {
            launch(
                record,
                [blocks(n * out_w)?, 1, 1],
                DATA_THREADS,
                &mut args,
                &self.stream,
            )
        }
        .map_err(launch_err("nnc_record_step"))?;
        let mut args = [cursor];
        // SAFETY: `nnc_advance` takes the step counter's address (one warp: thread 0 acts).
        unsafe { launch(advance, [1, 1, 1], 32, &mut args, &self.stream) }
            .map_err(launch_err("nnc_advance"))?;
        Ok(())
    }

    /// One epoch (or evaluation) over the split resident in `slot` (see the module doc);
    /// `None` when the split does not fit on the device.
    pub(super) fn resident_epoch(
        &mut self,
        slot: usize,
        x: &Tensor,
        y: &Tensor,
        order: &[usize],
        batch: usize,
    ) -> Result<Option<EpochRun>, ExecError> {
        let rows = x.rows();
        let steps = order.len().div_ceil(batch.max(1));
        if batch == 0
            || order.len() > rows
            || order.iter().any(|&i| i >= rows)
            || rows > u32::MAX as usize
        {
            return Err(ExecError::new(
                "the epoch's row order does not fit the data",
            ));
        }
        if !self.make_resident(slot, x, y, steps)? {
            return Ok(None);
        }
        let train = slot == TRAIN;
        let widths = [x.row_len(), y.data.len() / rows.max(1)];
        let order32: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        {
            let r = self.resident[slot].as_mut().expect("made resident above");
            let what = driver_error("cannot start the epoch on the GPU");
            self.stream
                .memcpy_htod(&order32, &mut r.order.slice_mut(0..order32.len()))
                .map_err(&what)?;
            self.stream
                .memcpy_htod(&[0u64], &mut r.cursor)
                .map_err(&what)?;
        }
        let (full, rest) = (order.len() / batch, order.len() % batch);
        if full > 0 {
            // The arena serves both programs: sized for both now, so that evaluation does
            // not move it (and force a new graph) after the capture.
            let (this, other) = (StepProgram::of(train), StepProgram::of(!train));
            self.prepare(other, batch, batch * widths[0], batch * widths[1])?;
            self.prepare(this, batch, batch * widths[0], batch * widths[1])?;
            let ptrs = self.bind(this, batch, batch * widths[0], batch * widths[1])?;
            // Evaluation runs once per epoch: its steps are launched directly.
            if self.graphs && train {
                self.replay_graph(batch, widths, &ptrs, full)?;
            } else {
                for _ in 0..full {
                    self.enqueue_resident_step(slot, batch, batch, widths, &ptrs)?;
                }
            }
        }
        if rest > 0 {
            self.prepare(
                StepProgram::of(train),
                rest,
                rest * widths[0],
                rest * widths[1],
            )?;
            let ptrs = self.bind(
                StepProgram::of(train),
                rest,
                rest * widths[0],
                rest * widths[1],
            )?;
            self.enqueue_resident_step(slot, rest, batch, widths, &ptrs)?;
        }
        let out_w = self.info.output_shape.iter().product::<usize>();
        let r = self.resident[slot].as_ref().expect("made resident above");
        let mut losses = vec![0.0f32; steps];
        let mut outputs = vec![0.0f32; order.len() * out_w];
        let what = driver_error("cannot read the epoch's results from the GPU");
        self.stream
            .memcpy_dtoh(&r.losses.slice(0..steps), &mut losses)
            .map_err(&what)?;
        if !outputs.is_empty() {
            let len = outputs.len();
            self.stream
                .memcpy_dtoh(&r.outputs.slice(0..len), &mut outputs)
                .map_err(&what)?;
        }
        self.stream.synchronize().map_err(&what)?;
        let mut shape = vec![order.len()];
        shape.extend_from_slice(&self.info.output_shape);
        let program = if train { &self.train } else { &self.eval };
        let has_output = program.program.buffers.iter().any(|b| b.name == OUTPUT);
        Ok(Some(EpochRun {
            losses,
            outputs: has_output.then_some(Tensor {
                shape,
                data: outputs,
            }),
        }))
    }

    /// Runs `times` full-size steps by replaying one captured step, capturing it first
    /// (again) when there is none or a buffer it uses has moved.
    pub(super) fn replay_graph(
        &mut self,
        batch: usize,
        widths: [usize; 2],
        ptrs: &[u64],
        times: usize,
    ) -> Result<(), ExecError> {
        let mut signature = ptrs.to_vec();
        signature.extend([batch as u64, widths[0] as u64, widths[1] as u64]);
        let current = self.resident[TRAIN]
            .as_ref()
            .and_then(|r| r.graph.as_ref())
            .is_some_and(|(sig, _)| *sig == signature);
        if !current {
            if let Some(r) = self.resident[TRAIN].as_mut() {
                r.graph = None;
            }
            let what = driver_error("cannot capture the training step as a CUDA graph");
            self.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(&what)?;
            let enqueued = self.enqueue_resident_step(TRAIN, batch, batch, widths, ptrs);
            // End the capture whatever happened, so the stream is usable again; a failed
            // launch is the error to report (it invalidates the capture too).
            let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            enqueued?;
            let graph = graph.map_err(&what)?;
            let graph = graph.ok_or_else(|| ExecError::new("the captured CUDA graph is empty"))?;
            if let Some(r) = self.resident[TRAIN].as_mut() {
                r.graph = Some((signature, graph));
            }
        }
        let (_, graph) = self.resident[TRAIN]
            .as_ref()
            .and_then(|r| r.graph.as_ref())
            .ok_or_else(|| ExecError::new("no CUDA graph for the training step"))?;
        for _ in 0..times {
            graph
                .launch()
                .map_err(driver_error("cannot launch the training step's CUDA graph"))?;
        }
        Ok(())
    }
}
