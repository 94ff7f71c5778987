// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IERC721Metadata} from "@openzeppelin/contracts/token/ERC721/extensions/IERC721Metadata.sol";

/// @title IAgentRegistry — ERC-8004 agent identities with owner-set spend permissions
/// @notice Each agent is an ERC-721 token (agentId) owned by its developer, with a bound hot
/// wallet (EIP-712 consent, ERC-1271 for contract wallets) and on-chain metadata. An owner can let
/// the agent wallet pull up to an allowance of a token per period from the owner's balance while
/// that wallet binding and that ownership last. Amounts are in token base units; periods and
/// deadlines in seconds. Function and event names follow the ERC-8004 identity registry.
interface IAgentRegistry is IERC721Metadata {
    /// @notice One on-chain metadata entry.
    struct MetadataEntry {
        string metadataKey;
        bytes metadataValue;
    }

    /// @notice An owner's grant to one agent wallet for one token (three storage slots).
    /// `grantor` is zero once revoked; `epoch` and `binding` are the agent's ownership epoch and
    /// wallet-binding count at the grant: the permission is dead once the agent changes hands or its
    /// wallet is bound again; `periodStart`, `period` in seconds; amounts in token base units.
    struct SpendPermission {
        address grantor;
        uint48 period;
        uint48 periodStart;
        address wallet;
        uint48 epoch;
        uint48 binding;
        uint128 allowance;
        uint128 spentInPeriod;
    }

    // ---------------------------------------------------------------- errors

    /// @notice Only the agent's owner may do this (for identity updates, also an approved operator).
    /// @param agentId The agent.
    /// @param caller Who tried.
    error NotAgentOwner(uint256 agentId, address caller);
    /// @notice `agentWallet` is set only through setAgentWallet.
    /// @param metadataKey The reserved key given.
    error ReservedMetadataKey(string metadataKey);
    /// @notice The wallet-binding signature's deadline has passed.
    /// @param deadline The signed deadline.
    /// @param timestamp The block time.
    error WalletSignatureExpired(uint256 deadline, uint256 timestamp);
    /// @notice The wallet-binding deadline is too far in the future.
    /// @param deadline The signed deadline.
    /// @param maxDeadline The latest deadline accepted now (block time + MAX_DEADLINE_DELAY).
    error DeadlineTooFar(uint256 deadline, uint256 maxDeadline);
    /// @notice The wallet did not sign this binding.
    /// @param agentId The agent.
    /// @param wallet The wallet to bind.
    error InvalidWalletSignature(uint256 agentId, address wallet);
    /// @notice A wallet or token address is zero.
    error ZeroAddress();
    /// @notice Only the agent's wallet may spend under its permission.
    /// @param agentId The agent.
    /// @param caller Who tried.
    /// @param wallet The agent's wallet (zero if none).
    error NotAgentWallet(uint256 agentId, address caller, address wallet);
    /// @notice There is no live permission (never granted, revoked, or the agent changed owner).
    /// @param agentId The agent.
    /// @param token The token asked for.
    error NoSpendPermission(uint256 agentId, address token);
    /// @notice The wallet binding changed since the grant: the agent's wallet is now `agentWallet`
    /// (another wallet than `permittedWallet`, or the same one unbound and bound again).
    /// @param agentId The agent.
    /// @param token The token asked for.
    /// @param permittedWallet The wallet the permission was granted to.
    /// @param agentWallet The agent's wallet now.
    error WalletBindingChanged(uint256 agentId, address token, address permittedWallet, address agentWallet);
    /// @notice A grant must name the agent's current wallet (`boundWallet`, zero if none).
    /// @param agentId The agent.
    /// @param wallet The wallet named.
    /// @param boundWallet The agent's wallet now.
    error WalletNotBound(uint256 agentId, address wallet, address boundWallet);
    /// @notice Only the permission's grantor may revoke it.
    /// @param agentId The agent.
    /// @param token The permission's token.
    /// @param caller Who tried.
    /// @param grantor Who granted it.
    error NotGrantor(uint256 agentId, address token, address caller, address grantor);
    /// @notice The request is above what is left of this period's allowance.
    /// @param agentId The agent.
    /// @param token The permission's token.
    /// @param remaining What is left this period.
    /// @param requested What was asked for.
    error SpendPermissionExceeded(uint256 agentId, address token, uint256 remaining, uint256 requested);
    /// @notice A permission period must be at least one second (and below 2^48).
    /// @param period The period given, in seconds.
    error InvalidPeriod(uint256 period);

    // ---------------------------------------------------------------- events

    /// @notice ERC-8004: a new agent identity.
    /// @param agentId The new agent's id.
    /// @param agentURI Its registration file (may be empty).
    /// @param owner Who owns it.
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    /// @notice ERC-8004: the agent's registration URI changed.
    /// @param agentId The agent.
    /// @param newURI The new URI.
    /// @param updatedBy The owner or operator who changed it.
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    /// @notice ERC-8004: a metadata entry changed (also emitted for `agentWallet`).
    /// @param agentId The agent.
    /// @param indexedMetadataKey The key (indexed: its keccak256).
    /// @param metadataKey The key.
    /// @param metadataValue The new value.
    event MetadataSet(
        uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue
    );
    /// @notice The owner let `wallet` spend `allowance` of `token` per `period` seconds;
    /// `spentInPeriod` is what the current period already used (carried over by a re-grant).
    /// @param agentId The agent.
    /// @param token The token.
    /// @param grantor The owner who granted it.
    /// @param wallet The agent wallet it was granted to.
    /// @param allowance The cap per period (as given; above 2^128 - 1 means unlimited).
    /// @param period The period in seconds.
    /// @param spentInPeriod What the current period already used.
    event SpendPermissionGranted(
        uint256 indexed agentId,
        address indexed token,
        address indexed grantor,
        address wallet,
        uint256 allowance,
        uint256 period,
        uint256 spentInPeriod
    );
    /// @notice The grantor withdrew the permission.
    /// @param agentId The agent.
    /// @param token The token.
    /// @param grantor Who revoked it.
    event SpendPermissionRevoked(uint256 indexed agentId, address indexed token, address indexed grantor);
    /// @notice The agent wallet pulled `amount` of the owner's `token` to `to`.
    /// @param agentId The agent.
    /// @param token The token.
    /// @param to Who received it.
    /// @param amount What was moved.
    /// @param spentInPeriod What the current period has used now.
    event SpendPermissionUsed(
        uint256 indexed agentId, address indexed token, address indexed to, uint256 amount, uint256 spentInPeriod
    );

    // ---------------------------------------------------------------- external: identity

    /// @notice Registers an agent with no URI; the caller owns it and is its first wallet.
    /// @return agentId The new agent's id.
    function register() external returns (uint256 agentId);

    /// @notice Registers an agent whose registration file lives at `agentURI`.
    /// @param agentURI The registration file's URI.
    /// @return agentId The new agent's id.
    function register(string calldata agentURI) external returns (uint256 agentId);

    /// @notice Registers an agent with a URI and on-chain metadata.
    /// @param agentURI The registration file's URI.
    /// @param metadata Entries to set (not `agentWallet`).
    /// @return agentId The new agent's id.
    function register(string calldata agentURI, MetadataEntry[] calldata metadata)
        external
        returns (uint256 agentId);

    /// @notice Points the agent at a new registration file (owner or approved operator).
    /// @param agentId The agent.
    /// @param newURI The new URI.
    function setAgentURI(uint256 agentId, string calldata newURI) external;

    /// @notice Sets one metadata entry, not `agentWallet` (owner or approved operator).
    /// @param agentId The agent.
    /// @param metadataKey The key (e.g. `encryptionKey`, `endpoint`).
    /// @param metadataValue The value.
    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external;

    /// @notice Binds `newWallet` to the agent (owner or approved operator, ERC-8004); any (re)binding
    /// ends the spend permissions granted before it: the owner grants anew.
    /// @param agentId The agent.
    /// @param newWallet The wallet to bind (not zero).
    /// @param deadline Until when the wallet's consent is valid (at most MAX_DEADLINE_DELAY ahead).
    /// @param signature newWallet's EIP-712 AgentWalletSet signature (ERC-1271 for a contract wallet).
    function setAgentWallet(uint256 agentId, address newWallet, uint256 deadline, bytes calldata signature)
        external;

    /// @notice Removes the agent's wallet binding; this ends its spend permissions (binding the
    /// same wallet again does not revive them: the owner grants anew).
    /// @param agentId The agent.
    function unsetAgentWallet(uint256 agentId) external;

    // ---------------------------------------------------------------- external: spend permissions

    /// @notice Lets `wallet` (which must be the agent's wallet now) pull up to `allowance` of
    /// `token` (base units; above 2^128 - 1 means unlimited) per `period` seconds from the caller,
    /// the agent's owner, for as long as this wallet binding lasts. The owner must also approve
    /// this registry on the token. Naming the wallet means a rebinding sent just before the grant
    /// makes it revert instead of empowering another wallet. Re-granting (to lower, raise, change
    /// the period, or after a rebinding) under the same ownership within the current period keeps
    /// what it already spent; a new period length starts a new period now, still counting that.
    /// @param agentId The agent.
    /// @param token The token (not zero).
    /// @param wallet The agent's current wallet.
    /// @param allowance The cap per period (base units; above 2^128 - 1 means unlimited).
    /// @param period The period in seconds (1 to 2^48 - 1).
    function grantSpendPermission(uint256 agentId, address token, address wallet, uint256 allowance, uint256 period)
        external;

    /// @notice Withdraws the permission at once. Its grantor may always revoke, also after the
    /// agent changed hands (the permission is dead then anyway). What the current period spent is
    /// remembered, so revoking and re-granting does not reset it.
    /// @param agentId The agent.
    /// @param token The permission's token.
    function revokeSpendPermission(uint256 agentId, address token) external;

    /// @notice Called by the agent wallet: moves `amount` (base units) of the owner's `token` to `to`.
    /// @param agentId The agent.
    /// @param token The permission's token.
    /// @param to Who receives it.
    /// @param amount Base units to move (at most what is left this period).
    function spendFromOwner(uint256 agentId, address token, address to, uint256 amount) external;

    // ---------------------------------------------------------------- views

    /// @notice ERC-8004: the wallet the agent acts from (zero if unbound). Reverts for an unknown agent.
    /// @param agentId The agent.
    /// @return The wallet.
    function getAgentWallet(uint256 agentId) external view returns (address);

    /// @notice ERC-8004: one metadata entry.
    /// @param agentId The agent.
    /// @param metadataKey The key.
    /// @return The value (empty if unset).
    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory);

    /// @notice The permission for `token`, whether the agent wallet can use it now (granted, not
    /// revoked, same ownership epoch, same wallet binding) and what is left of it in the current
    /// period (0 when not active).
    /// @param agentId The agent.
    /// @param token The token.
    /// @return permission The stored permission.
    /// @return active Whether the agent wallet can use it now.
    /// @return remaining What is left this period.
    function spendPermission(uint256 agentId, address token)
        external
        view
        returns (SpendPermission memory permission, bool active, uint256 remaining);

    /// @notice How many times the agent NFT has moved (transfer, transfer to self, burn).
    /// @param agentId The agent.
    /// @return The ownership epoch.
    function ownershipEpoch(uint256 agentId) external view returns (uint256);

    /// @notice How many times the agent's wallet was bound or unbound (registration included).
    /// @param agentId The agent.
    /// @return The binding count.
    function walletBindingEpoch(uint256 agentId) external view returns (uint256);

    /// @notice The EIP-712 digest a wallet signs to be bound to `agentId`.
    /// @param agentId The agent.
    /// @param newWallet The wallet to bind.
    /// @param owner The agent's owner.
    /// @param deadline Until when the consent is valid.
    /// @return The digest.
    function agentWalletDigest(uint256 agentId, address newWallet, address owner, uint256 deadline)
        external
        view
        returns (bytes32);

    /// @notice Number of agents registered; ids run from 1.
    /// @return The count.
    function agentCount() external view returns (uint256);
}
