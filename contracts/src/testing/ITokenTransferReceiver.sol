// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title ITokenTransferReceiver — the recipient hook MaliciousToken calls (test-only)
/// @notice ERC-677 / ERC-777 style notification: a contract that receives tokens is called back
/// after its balance went up, which hands it control in the middle of the sender's transaction.
interface ITokenTransferReceiver {
    /// @notice `amount` tokens of the calling token just arrived from `from`.
    function onTokenTransfer(address from, uint256 amount) external;
}
